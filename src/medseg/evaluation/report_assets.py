"""The report page's inline stylesheet and script (no external file, no network)."""

CSS = """
:root { --fg: #1d2330; --muted: #5d6677; --line: #d9dee7; --bg: #f5f7fa; --card: #fff; --accent: #2563eb; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
  background: var(--bg); }
header.top { background: #111827; color: #f3f4f6; padding: 18px 28px 12px; }
header.top h1 { margin: 0 0 4px; font-size: 22px; font-weight: 600; }
header.top .sub { color: #9ca3af; font-size: 12.5px; }
nav.toc { position: sticky; top: 0; z-index: 20; background: #1f2937; padding: 6px 28px; display: flex; gap: 18px;
  flex-wrap: wrap; }
nav.toc a { color: #d1d5db; text-decoration: none; font-size: 13px; }
nav.toc a:hover { color: #fff; }
main { max-width: 1280px; margin: 0 auto; padding: 8px 28px 60px; }
section.block { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 14px 20px 18px;
  margin: 18px 0; }
section.block { scroll-margin-top: 40px; }
.viewer { scroll-margin-top: 100px; }
section.block > h2 { margin: 0 0 10px; font-size: 18px; font-weight: 600; }
h3 { font-size: 15px; margin: 16px 0 8px; font-weight: 600; }
p.missing { color: #8a5a00; background: #fff8e6; border: 1px solid #f3dca4; padding: 8px 12px; border-radius: 6px; }
p.note, .note { color: var(--muted); font-size: 12.5px; }
code { background: #eef1f5; padding: 1px 4px; border-radius: 3px; font-size: 12.5px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; min-width: 150px; background: #fbfcfe; }
.card .k { color: var(--muted); font-size: 12px; }
.card .v { font-size: 22px; font-weight: 600; }
.card .v small { font-size: 12px; color: var(--muted); font-weight: 400; }
table { border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 9px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f0f3f7; position: sticky; top: 33px; z-index: 5; }
table.sortable thead th { cursor: pointer; user-select: none; }
table.sortable thead th::after { content: " \\2195"; color: #b0b7c3; font-size: 11px; }
table.sortable thead th[aria-sort=ascending]::after { content: " \\25B2"; color: var(--accent); }
table.sortable thead th[aria-sort=descending]::after { content: " \\25BC"; color: var(--accent); }
tbody tr:hover td { background-color: #f3f6fb; }
td.na { color: #aab1bd; }
th.left, td.left { text-align: left; }
td.wrap { white-space: normal; vertical-align: top; min-width: 220px; }
td.wrap ul { margin: 0; padding-left: 16px; }
.scroll { overflow-x: auto; max-height: 560px; overflow-y: auto; }
.scroll thead th { top: 0; }
details > summary { cursor: pointer; color: var(--accent); margin: 8px 0; }
pre { background: #f4f6f9; border: 1px solid var(--line); padding: 10px; border-radius: 6px; overflow: auto;
  max-height: 420px; font-size: 12px; }
.charts { display: flex; flex-wrap: wrap; gap: 10px; }
svg.chart { background: #fff; border: 1px solid var(--line); border-radius: 6px; }
svg.chart .chart-title { font-size: 12.5px; font-weight: 600; fill: var(--fg); }
svg.chart .chart-bg { fill: #fbfcfe; }
svg.chart .grid { stroke: #e5e8ee; stroke-width: 1; }
svg.chart .tick { font-size: 10px; fill: var(--muted); }
svg.chart .axis, svg.chart .legend { font-size: 11px; fill: var(--fg); }
svg.chart .chart-empty { font-size: 12px; fill: var(--muted); }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; vertical-align: -1px;
  margin-right: 4px; border: 1px solid rgba(0,0,0,.25); }
.controls { position: sticky; top: 33px; z-index: 10; background: #fff; border: 1px solid var(--line);
  border-radius: 8px; padding: 8px 14px; display: flex; gap: 18px; flex-wrap: wrap; align-items: center;
  box-shadow: 0 2px 6px rgba(0,0,0,.05); margin-bottom: 10px; }
.controls label { font-size: 13px; }
.controls .legend-item { margin-right: 10px; font-size: 13px; }
.viewer { border-top: 1px solid var(--line); padding: 10px 0 14px; }
.viewer h3 { margin: 4px 0 2px; }
.viewer h3 .rank { color: var(--muted); font-weight: 400; margin-right: 4px; }
.viewer .scores { font-size: 12.5px; color: var(--muted); margin-bottom: 6px; }
.views { display: flex; gap: 12px; flex-wrap: wrap; align-items: flex-start; }
.view { width: 380px; max-width: 100%; background: #0b0d12; border-radius: 6px; padding: 6px; color: #d1d5db; }
.view .view-title { font-size: 12px; display: flex; justify-content: space-between; margin: 0 2px 4px; }
.view canvas.slice { display: block; margin: 0 auto; background: #000; cursor: crosshair; }
.view canvas.profile { display: block; width: 100%; height: 14px; margin-top: 4px; cursor: pointer; }
.view input[type=range] { width: 100%; margin: 4px 0 0; }
.viewer-status { color: var(--muted); font-size: 12.5px; min-height: 1em; }
.dice-bar { display: inline-block; height: 8px; border-radius: 2px; background: #16a34a; vertical-align: 1px; }
figure.png { display: inline-block; margin: 6px 12px 6px 0; font-size: 12px; color: var(--muted); }
"""

JS = r"""
(function () {
  "use strict";
  var meta = JSON.parse(document.getElementById("medseg-meta").textContent);
  var colors = [];
  meta.labels.forEach(function (l) {
    var n = parseInt(l.color.slice(1), 16);
    colors.push({ value: l.value, rgb: [(n >> 16) & 255, (n >> 8) & 255, n & 255] });
  });
  var colorOf = {};
  colors.forEach(function (c) { colorOf[c.value] = c.rgb; });
  var settings = { ref: "outline", pred: "fill", opacity: 0.45, cross: true };
  var viewers = [];

  // ------------------------------------------------------------------ sortable tables
  function sortKey(cell, numeric) {
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
    if (!numeric) return raw.toLowerCase();
    if (raw === "") return null;
    var v = Number(raw);
    return isFinite(v) ? v : null;
  }
  function sortTable(table, col, th) {
    var numeric = th.getAttribute("data-type") === "num";
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    Array.prototype.forEach.call(table.tHead.querySelectorAll("th"), function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.map.call(body.rows, function (r, i) {
      return { r: r, i: i, k: sortKey(r.cells[col], numeric) };
    });
    rows.sort(function (a, b) {
      if (a.k === null && b.k === null) return a.i - b.i;
      if (a.k === null) return 1;
      if (b.k === null) return -1;
      if (a.k < b.k) return -dir;
      if (a.k > b.k) return dir;
      return a.i - b.i;
    });
    rows.forEach(function (x) { body.appendChild(x.r); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    var head = table.tHead.rows[table.tHead.rows.length - 1];
    Array.prototype.forEach.call(head.cells, function (th, col) {
      th.tabIndex = 0;
      th.title = "sort";
      th.addEventListener("click", function () { sortTable(table, col, th); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortTable(table, col, th); }
      });
    });
  });

  // ------------------------------------------------------------------ slice viewer
  function inflate(id) {
    var text = document.getElementById(id).textContent.replace(/\s+/g, "");
    var bin = atob(text);
    var bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    if (typeof DecompressionStream === "undefined") {
      return Promise.reject(new Error("this browser cannot unpack the embedded slices (no DecompressionStream); " +
        "open the report in a current Chrome, Edge, Firefox or Safari"));
    }
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Response(stream).arrayBuffer().then(function (buf) { return new Uint8Array(buf); });
  }

  var AXES = ["axial", "coronal", "sagittal"];
  var AXIS_LETTER = ["z", "y", "x"];

  function Viewer(root, spec) {
    this.root = root;
    this.spec = spec;
    this.loaded = false;
    this.loading = false;
    this.panels = Array.prototype.map.call(root.querySelectorAll(".view"), function (el) {
      return { el: el, axis: Number(el.getAttribute("data-axis")), canvas: el.querySelector("canvas.slice"),
        profile: el.querySelector("canvas.profile"), slider: el.querySelector("input[type=range]"),
        label: el.querySelector(".slice-label") };
    });
  }

  Viewer.prototype.load = function () {
    if (this.loading) return;
    this.loading = true;
    var self = this, spec = this.spec, status = this.root.querySelector(".viewer-status");
    status.textContent = "unpacking slices\u2026";
    inflate(spec.data).then(function (buf) {
      var n = spec.shape[0] * spec.shape[1] * spec.shape[2];
      var planes = spec.has_image ? 3 : 2;
      if (buf.length !== n * planes) throw new Error("embedded slice data has " + buf.length + " bytes, expected " + n * planes);
      var off = spec.has_image ? n : 0;
      self.img = spec.has_image ? buf.subarray(0, n) : null;
      self.ref = buf.subarray(off, off + n);
      self.pred = buf.subarray(off + n, off + 2 * n);
      self.pos = spec.start.slice();
      self.profiles = self.errorProfiles();
      self.panels.forEach(function (p) { self.bind(p); });
      self.loaded = true;
      status.textContent = "";
      self.drawAll();
      self.root.setAttribute("data-ready", "true");
    }).catch(function (err) {
      status.textContent = "Cannot show this case: " + err.message;
      self.root.setAttribute("data-ready", "error");
    });
  };

  Viewer.prototype.geometry = function (axis) {
    var s = this.spec.shape, sp = this.spec.spacing, nz = s[0], ny = s[1], nx = s[2];
    if (axis === 0) return { w: nx, h: ny, cs: sp[2], rs: sp[1], n: nz,
      at: function (k, r, c) { return (k * ny + r) * nx + c; } };
    if (axis === 1) return { w: nx, h: nz, cs: sp[2], rs: sp[0], n: ny,
      at: function (k, r, c) { return ((nz - 1 - r) * ny + k) * nx + c; } };
    return { w: ny, h: nz, cs: sp[1], rs: sp[0], n: nx,
      at: function (k, r, c) { return ((nz - 1 - r) * ny + c) * nx + k; } };
  };

  // The crosshair in a panel (column, row) and its inverse, from the 3D position.
  Viewer.prototype.cross = function (axis) {
    var p = this.pos, nz = this.spec.shape[0];
    if (axis === 0) return [p[2], p[1]];
    if (axis === 1) return [p[2], nz - 1 - p[0]];
    return [p[1], nz - 1 - p[0]];
  };
  Viewer.prototype.pointAt = function (axis, c, r) {
    var nz = this.spec.shape[0];
    if (axis === 0) { this.pos[1] = r; this.pos[2] = c; }
    else if (axis === 1) { this.pos[0] = nz - 1 - r; this.pos[2] = c; }
    else { this.pos[0] = nz - 1 - r; this.pos[1] = c; }
  };

  Viewer.prototype.errorProfiles = function () {
    var s = this.spec.shape, nz = s[0], ny = s[1], nx = s[2];
    var pz = new Float64Array(nz), py = new Float64Array(ny), px = new Float64Array(nx);
    var ref = this.ref, pred = this.pred, i = 0;
    for (var z = 0; z < nz; z++) for (var y = 0; y < ny; y++) for (var x = 0; x < nx; x++, i++) {
      if (ref[i] !== pred[i]) { pz[z]++; py[y]++; px[x]++; }
    }
    return [pz, py, px];
  };

  Viewer.prototype.bind = function (p) {
    var self = this, g = this.geometry(p.axis);
    p.slider.min = 0;
    p.slider.max = g.n - 1;
    p.slider.step = 1;
    p.slider.disabled = false;
    p.slider.addEventListener("input", function () {
      self.pos[p.axis] = Number(p.slider.value);
      self.drawAll();
    });
    p.canvas.addEventListener("click", function (e) {
      var rect = p.canvas.getBoundingClientRect();
      var c = Math.min(g.w - 1, Math.max(0, Math.floor((e.clientX - rect.left) / rect.width * g.w)));
      var r = Math.min(g.h - 1, Math.max(0, Math.floor((e.clientY - rect.top) / rect.height * g.h)));
      self.pointAt(p.axis, c, r);
      self.drawAll();
    });
    p.profile.addEventListener("click", function (e) {
      var rect = p.profile.getBoundingClientRect();
      self.pos[p.axis] = Math.min(g.n - 1, Math.max(0, Math.floor((e.clientX - rect.left) / rect.width * g.n)));
      self.drawAll();
    });
  };

  Viewer.prototype.drawAll = function () {
    if (!this.loaded) return;
    var self = this;
    this.panels.forEach(function (p) { self.draw(p); });
  };

  function outline(ctx, lab, w, h, value, sx, sy) {
    var any = false, r, c, start, a, b, edge;
    for (r = 0; r <= h; r++) {
      start = -1;
      for (c = 0; c <= w; c++) {
        edge = false;
        if (c < w) {
          a = r > 0 && lab[(r - 1) * w + c] === value;
          b = r < h && lab[r * w + c] === value;
          edge = a !== b;
        }
        if (edge && start < 0) start = c;
        if (!edge && start >= 0) { ctx.moveTo(start * sx, r * sy); ctx.lineTo(c * sx, r * sy); start = -1; any = true; }
      }
    }
    for (c = 0; c <= w; c++) {
      start = -1;
      for (r = 0; r <= h; r++) {
        edge = false;
        if (r < h) {
          a = c > 0 && lab[r * w + c - 1] === value;
          b = c < w && lab[r * w + c] === value;
          edge = a !== b;
        }
        if (edge && start < 0) start = r;
        if (!edge && start >= 0) { ctx.moveTo(c * sx, start * sy); ctx.lineTo(c * sx, r * sy); start = -1; any = true; }
      }
    }
    return any;
  }

  Viewer.prototype.draw = function (p) {
    var g = this.geometry(p.axis), w = g.w, h = g.h, k = this.pos[p.axis];
    var avail = Math.max(160, p.el.clientWidth - 12);
    var W = avail, H = W * (h * g.rs) / (w * g.cs), maxH = 1.25 * avail;
    if (H > maxH) { W = W * maxH / H; H = maxH; }
    var dpr = window.devicePixelRatio || 1, cv = p.canvas;
    cv.style.width = Math.round(W) + "px";
    cv.style.height = Math.round(H) + "px";
    cv.width = Math.max(1, Math.round(W * dpr));
    cv.height = Math.max(1, Math.round(H * dpr));
    var ctx = cv.getContext("2d");
    var base = new ImageData(w, h), ref = new Uint8Array(w * h), pred = new Uint8Array(w * h);
    var d = base.data, img = this.img, r, c, q, i, v;
    for (r = 0; r < h; r++) for (c = 0; c < w; c++) {
      i = g.at(k, r, c); q = r * w + c; v = img ? img[i] : 0;
      d[4 * q] = v; d[4 * q + 1] = v; d[4 * q + 2] = v; d[4 * q + 3] = 255;
      ref[q] = this.ref[i]; pred[q] = this.pred[i];
    }
    var off = document.createElement("canvas");
    off.width = w; off.height = h;
    var octx = off.getContext("2d");
    octx.putImageData(base, 0, 0);
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(off, 0, 0, cv.width, cv.height);
    var layers = [{ lab: ref, style: settings.ref, dash: [] }, { lab: pred, style: settings.pred, dash: [5, 3] }];
    var alpha = Math.round(255 * settings.opacity);
    layers.forEach(function (layer) {
      if (layer.style !== "fill") return;
      var f = new ImageData(w, h), fd = f.data, lab = layer.lab;
      for (var q2 = 0; q2 < w * h; q2++) {
        var col = lab[q2] ? colorOf[lab[q2]] : null;
        if (col) { fd[4 * q2] = col[0]; fd[4 * q2 + 1] = col[1]; fd[4 * q2 + 2] = col[2]; fd[4 * q2 + 3] = alpha; }
      }
      octx.putImageData(f, 0, 0);
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(off, 0, 0, cv.width, cv.height);
    });
    var sx = cv.width / w, sy = cv.height / h;
    layers.forEach(function (layer) {
      if (layer.style !== "outline") return;
      colors.forEach(function (cl) {
        ctx.beginPath();
        if (!outline(ctx, layer.lab, w, h, cl.value, sx, sy)) return;
        ctx.lineCap = "square";
        if (!layer.dash.length) {  // a dark halo keeps solid outlines readable on bright tissue
          ctx.strokeStyle = "rgba(0,0,0,0.5)";
          ctx.lineWidth = 3.2 * dpr;
          ctx.stroke();
        }
        ctx.setLineDash(layer.dash.map(function (x) { return x * dpr; }));
        ctx.strokeStyle = "rgb(" + cl.rgb.join(",") + ")";
        ctx.lineWidth = (layer.dash.length ? 2 : 1.6) * dpr;
        ctx.stroke();
        ctx.setLineDash([]);
      });
    });
    if (settings.cross) {
      var cr = this.cross(p.axis);
      ctx.strokeStyle = "rgba(255,235,59,0.45)";
      ctx.lineWidth = 1 * dpr;
      ctx.beginPath();
      ctx.moveTo((cr[0] + 0.5) * sx, 0); ctx.lineTo((cr[0] + 0.5) * sx, cv.height);
      ctx.moveTo(0, (cr[1] + 0.5) * sy); ctx.lineTo(cv.width, (cr[1] + 0.5) * sy);
      ctx.stroke();
    }
    p.slider.value = k;
    p.el.setAttribute("data-slice", String(k));
    var text = AXIS_LETTER[p.axis] + " " + (k + 1) + " / " + g.n;
    if (this.spec.index) text += " (voxel " + (this.spec.index[p.axis][k] + 1) + " of " + this.spec.full_shape[p.axis] + ")";
    p.label.textContent = text;
    this.drawProfile(p, g, k);
  };

  Viewer.prototype.drawProfile = function (p, g, k) {
    var cv = p.profile, dpr = window.devicePixelRatio || 1;
    var W = Math.max(1, cv.clientWidth), H = 14;
    cv.width = Math.round(W * dpr); cv.height = Math.round(H * dpr);
    var ctx = cv.getContext("2d"), prof = this.profiles[p.axis], n = g.n, max = 0, i;
    for (i = 0; i < n; i++) max = Math.max(max, prof[i]);
    ctx.fillStyle = "#1f2430";
    ctx.fillRect(0, 0, cv.width, cv.height);
    var bw = cv.width / n;
    ctx.fillStyle = "#f87171";
    if (max > 0) for (i = 0; i < n; i++) {
      var bh = prof[i] / max * (cv.height - 2);
      if (bh > 0) ctx.fillRect(i * bw, cv.height - Math.max(1, bh), Math.max(1, bw - 0.5), Math.max(1, bh));
    }
    ctx.fillStyle = "#ffeb3b";
    ctx.fillRect(Math.min(cv.width - 2 * dpr, k * bw + bw / 2 - dpr), 0, 2 * dpr, cv.height);
  };

  function controls() {
    function on(id, ev, fn) { var el = document.getElementById(id); if (el) el.addEventListener(ev, fn); }
    function redraw() { viewers.forEach(function (v) { v.drawAll(); }); }
    on("ctl-ref", "change", function (e) { settings.ref = e.target.value; redraw(); });
    on("ctl-pred", "change", function (e) { settings.pred = e.target.value; redraw(); });
    on("ctl-opacity", "input", function (e) { settings.opacity = Number(e.target.value); redraw(); });
    on("ctl-cross", "change", function (e) { settings.cross = e.target.checked; redraw(); });
    var timer = null;
    window.addEventListener("resize", function () { clearTimeout(timer); timer = setTimeout(redraw, 150); });
  }

  function start() {
    meta.viewers.forEach(function (spec) {
      var root = document.getElementById(spec.dom);
      if (root) viewers.push(new Viewer(root, spec));
    });
    controls();
    if ("IntersectionObserver" in window) {
      var io = new IntersectionObserver(function (entries) {
        entries.forEach(function (e) {
          if (!e.isIntersecting) return;
          viewers.forEach(function (v) { if (v.root === e.target) v.load(); });
          io.unobserve(e.target);
        });
      }, { rootMargin: "900px 0px" });
      viewers.forEach(function (v) { io.observe(v.root); });
    } else {
      viewers.forEach(function (v) { v.load(); });
    }
  }
  start();
})();
"""
