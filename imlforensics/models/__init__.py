"""The deep models as pure ``torch.nn`` modules, one file per family (no file reading, no weights
handling: :mod:`imlforensics.weights` does that), plus each model's official pre- and
post-processing (:mod:`.preprocess`) and IMDL-BenCo's implementations for parity tests
(:mod:`.reference`). :mod:`imlforensics.detectors.deep` puts them behind the detector contract."""
