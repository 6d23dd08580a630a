"""C2PA / Content Credentials: the manifest store embedded in a file, read with c2pa-python.

C2PA (Coalition for Content Provenance and Authenticity, specification 2.x, c2pa.org) binds a
signed claim to the file's bytes: who produced it (claim generator), what was done (the
``c2pa.actions`` assertion) and a hash of the content. The library validates the signature and the
hash; a file changed after signing fails validation. c2pa-python is an optional dependency (the
``c2pa`` extra, about 50 MB); without it the result says so. The reader is configured never to go
on the network (no remote manifests, no OCSP).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

NOT_INSTALLED = "c2pa-python is not installed (pip install 'imlforensics[c2pa]')"


def _context() -> Any:
    import c2pa

    settings = c2pa.Settings()
    settings.set("verify.remote_manifest_fetch", "false")
    settings.set("verify.ocsp_fetch", "false")
    return c2pa.Context(settings)


def read_c2pa(path: Path) -> dict[str, Any]:
    """``present``, and for a manifest: title, claim generator, actions, signer, validation state
    (Valid, Trusted or Invalid) and the failure codes. ``available`` is False without the library."""
    try:
        import c2pa
    except ImportError:
        return {"available": False, "present": None, "note": NOT_INSTALLED}
    try:
        reader = c2pa.Reader(str(path), context=_context())
    except Exception as exc:  # noqa: BLE001  (C2paError: no manifest, or an unsupported or broken file)
        text = str(exc)
        if "ManifestNotFound" in type(exc).__name__ or "ManifestNotFound" in text or "no JUMBF" in text:
            return {"available": True, "present": False}
        return {"available": True, "present": False, "note": f"not readable by c2pa: {text[:200]}"}
    try:
        store = json.loads(reader.json())
        state = reader.get_validation_state()
    finally:
        reader.close()
    active = store.get("manifests", {}).get(store.get("active_manifest") or "", {})
    actions = []
    for a in active.get("assertions", []):
        if str(a.get("label", "")).startswith("c2pa.actions"):
            for act in a.get("data", {}).get("actions", []):
                agent = act.get("softwareAgent")
                actions.append({"action": act.get("action"),
                                "software_agent": agent.get("name") if isinstance(agent, dict) else agent,
                                "digital_source_type": act.get("digitalSourceType")})
    gens = active.get("claim_generator_info") or []
    generator = active.get("claim_generator") or ", ".join(
        f"{g.get('name', '')} {g.get('version', '')}".strip() for g in gens if isinstance(g, dict))
    failures = [s.get("code") for s in store.get("validation_status", []) or []]
    sig = active.get("signature_info", {})
    return {
        "available": True,
        "present": True,
        "title": active.get("title"),
        "claim_generator": generator or None,
        "actions": actions,
        "signer": sig.get("issuer") or sig.get("common_name"),
        "signed_at": sig.get("time"),
        "manifests": len(store.get("manifests", {})),
        "validation_state": state,
        "validation_failures": failures,
        "valid": state in ("Valid", "Trusted"),
    }
