// A small line chart in plain SVG: no library, nothing fetched from elsewhere.
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const W = 420, H = 190, L = 58, R = 10, T = 10, B = 24;

  function el(tag, attrs, text) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function fmt(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
    if (Number.isInteger(v)) return String(v);
    return v.toFixed(a >= 100 ? 1 : a >= 1 ? 3 : 4).replace(/0+$/, "").replace(/\.$/, "");
  }

  // xs, ys: arrays of numbers (ys may hold null: a gap). Returns an <svg>.
  function line(xs, ys, opts) {
    opts = opts || {};
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.label || "chart" });
    const pts = [];
    for (let i = 0; i < xs.length; i++) if (ys[i] !== null && isFinite(ys[i])) pts.push([xs[i], ys[i]]);
    svg.appendChild(el("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
    svg.appendChild(el("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
    if (!pts.length) {
      svg.appendChild(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no values yet"));
      return svg;
    }
    let x0 = Math.min(...pts.map(p => p[0])), x1 = Math.max(...pts.map(p => p[0]));
    let y0 = Math.min(...pts.map(p => p[1])), y1 = Math.max(...pts.map(p => p[1]));
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    if (y0 === y1) { const d = Math.abs(y0) * 0.1 || 1; y0 -= d; y1 += d; }
    const sx = x => L + (x - x0) / (x1 - x0) * (W - L - R);
    const sy = y => H - B - (y - y0) / (y1 - y0) * (H - T - B);
    for (const f of [0, 0.5, 1]) {
      const y = y0 + (y1 - y0) * f;
      svg.appendChild(el("line", { class: "axis", x1: L - 4, y1: sy(y), x2: L, y2: sy(y) }));
      svg.appendChild(el("text", { x: L - 6, y: sy(y) + 3, "text-anchor": "end" }, fmt(y)));
    }
    const xl = opts.xLabel || (v => fmt(v));
    svg.appendChild(el("text", { x: L, y: H - 8, "text-anchor": "start" }, xl(x0)));
    svg.appendChild(el("text", { x: W - R, y: H - 8, "text-anchor": "end" }, xl(x1)));
    if (opts.xName) svg.appendChild(el("text", { x: (L + W - R) / 2, y: H - 8, "text-anchor": "middle" }, opts.xName));
    const d = pts.map((p, i) => `${i ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
    svg.appendChild(el("path", { class: "line" + (opts.hardware ? " hw" : ""), d }));
    if (pts.length === 1) {
      svg.appendChild(el("circle", { cx: sx(pts[0][0]), cy: sy(pts[0][1]), r: 3, fill: "currentColor" }));
    }
    return svg;
  }

  window.ConjureChart = { line, fmt };
})();
