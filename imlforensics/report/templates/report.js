(function () {
  "use strict";
  var t0 = performance.now();
  var ROWS = JSON.parse(document.getElementById("data").textContent);
  var SIZE = {{ page_size }};
  var page = 0, shown = ROWS;
  var body = document.getElementById("rows");
  var ids = ["f-flagged", "f-failed", "f-abstained", "f-meta", "f-text"];
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function fmt(x, pct) {
    if (x === null || x === undefined) return "-";
    return pct ? (100 * x).toFixed(2) + "%" : x.toFixed(3);
  }
  function filter() {
    var fl = document.getElementById("f-flagged").checked, fa = document.getElementById("f-failed").checked;
    var ab = document.getElementById("f-abstained").checked, me = document.getElementById("f-meta").checked;
    var tx = document.getElementById("f-text").value.toLowerCase();
    shown = ROWS.filter(function (r) {
      return (!fl || r.flagged) && (!fa || r.failed) && (!ab || r.abstained.length > 0) &&
        (!me || r.warnings > 0) && (!tx || r.name.toLowerCase().indexOf(tx) >= 0);
    });
    page = 0;
    draw();
  }
  function draw() {
    var pages = Math.max(1, Math.ceil(shown.length / SIZE));
    page = Math.min(Math.max(page, 0), pages - 1);
    var frag = document.createDocumentFragment();
    shown.slice(page * SIZE, (page + 1) * SIZE).forEach(function (r) {
      var tr = el("tr"), td, a;
      tr.appendChild(el("td", "num", String(r.i + 1)));
      td = el("td");
      if (r.thumb) {
        a = el("a"); a.href = r.page;
        var img = el("img", "thumb"); img.src = r.thumb; img.alt = ""; img.loading = "lazy";
        a.appendChild(img); td.appendChild(a);
      }
      tr.appendChild(td);
      td = el("td"); a = el("a", null, r.name); a.href = r.page; td.appendChild(a); tr.appendChild(td);
      tr.appendChild(el("td", "num", fmt(r.score)));
      tr.appendChild(el("td", "num", fmt(r.area, true)));
      tr.appendChild(el("td", null, r.detector || ""));
      td = el("td");
      if (r.flagged) td.appendChild(el("span", "badge flagged", "flagged"));
      if (r.failed) { td.appendChild(el("span", "badge failed", "failed")); td.appendChild(document.createTextNode(" " + (r.error || ""))); }
      if (r.abstained.length) td.appendChild(el("span", "badge abst", "abstained: " + r.abstained.join(", ")));
      if (r.warnings) td.appendChild(el("span", "badge meta", r.warnings + " metadata warning(s)"));
      tr.appendChild(td);
      frag.appendChild(tr);
    });
    body.replaceChildren(frag);
    document.getElementById("pageinfo").textContent = "page " + (page + 1) + " of " + pages + " (" + shown.length + " image(s))";
  }
  ids.forEach(function (id) { document.getElementById(id).addEventListener("input", filter); });
  document.getElementById("prev").addEventListener("click", function () { page -= 1; draw(); });
  document.getElementById("next").addEventListener("click", function () { page += 1; draw(); });
  draw();
  // time to parse the rows and draw the first page, read by benchmarks/report_speed.py --browser
  document.getElementById("pageinfo").dataset.ms = (performance.now() - t0).toFixed(1);
})();
