// Conjure console: every page is rendered here from the JSON API (/api/...).
// Text from the API only ever becomes textContent, never HTML.
"use strict";

const main = document.getElementById("main");
const STATES_FINAL = new Set(["Complete", "Failed", "Stopped", "Killed", "Interrupted"]);
let timers = [];
let info = null;

// --- helpers -------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  return e;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, opts) {
  const resp = await fetch(path, Object.assign({ headers: { Accept: "application/json" } }, opts || {}));
  if (resp.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search); throw new ApiError(401, "log in"); }
  let body = null;
  try { body = await resp.json(); } catch (e) { body = null; }
  if (!resp.ok) throw new ApiError(resp.status, (body && body.error) || resp.statusText);
  return body;
}

function post(path) {
  return api(path, { method: "POST", headers: { Accept: "application/json", "Content-Type": "application/json" }, body: "{}" });
}

function every(ms, fn) {
  let busy = false;
  const id = setInterval(async () => {
    if (busy || document.hidden) return;
    busy = true;
    try { await fn(); } catch (e) { console.warn(e); } finally { busy = false; }
  }, ms);
  timers.push(id);
  return id;
}

function stopTimer(id) { clearInterval(id); timers = timers.filter(t => t !== id); }

function toast(msg, error) {
  const t = document.getElementById("toast");
  t.textContent = msg;
  t.className = error ? "error" : "";
  t.hidden = false;
  clearTimeout(toast._t);
  toast._t = setTimeout(() => { t.hidden = true; }, error ? 8000 : 4000);
}

function confirmDialog(title, text, okLabel, checkLabel) {
  const d = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = okLabel;
  const extra = document.getElementById("confirm-extra");
  const check = document.getElementById("confirm-check");
  extra.hidden = !checkLabel;
  check.checked = false;
  extra.querySelector("span").textContent = checkLabel || "";
  return new Promise(resolve => {
    d.addEventListener("close", () => resolve(d.returnValue === "ok" ? { checked: check.checked } : null), { once: true });
    d.returnValue = "cancel";
    d.showModal();
  });
}

function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  const pad = n => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function duration(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return s.toFixed(1) + "s";
  const m = Math.floor(s / 60), hh = Math.floor(m / 60);
  return hh ? `${hh}h${String(m % 60).padStart(2, "0")}m` : `${m}m${String(Math.floor(s % 60)).padStart(2, "0")}s`;
}

function money(c) {
  if (c === null || c === undefined) return "–";
  return c < 1 ? "$" + c.toFixed(4) : "$" + c.toFixed(2);
}

function bytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return i ? n.toFixed(1) + " " + u[i] : n + " B";
}

function badge(state, text) {
  return h("span", { class: "badge " + String(state).split(" ")[0], "data-state": state }, text || state);
}

function download(path) {
  return "/api/resources/download?path=" + encodeURIComponent(path);
}

function showError(e) {
  main.replaceChildren(h("div", { class: "error-box", role: "alert" }, e.message || String(e)));
}

function setTitle(t) { document.title = t + " · Conjure"; }

// --- runs ----------------------------------------------------------------------------

async function runsPage() {
  setTitle("Runs");
  const q = new URLSearchParams(location.search);
  const stateSel = h("select", { name: "state", "aria-label": "state" }, h("option", { value: "" }, "any state"),
    ...info.states.map(s => h("option", { value: s, selected: q.get("state") === s }, s)));
  const typeSel = h("select", { name: "machine_type", "aria-label": "machine type" }, h("option", { value: "" }, "any machine type"),
    ...info.machine_types.map(m => h("option", { value: m.name, selected: q.get("machine_type") === m.name }, m.name)));
  const text = h("input", { type: "search", name: "q", value: q.get("q") || "", placeholder: "words of the command" });
  const form = h("form", { class: "filters", method: "get", action: "/" }, stateSel, typeSel, text, h("button", { type: "submit" }, "Filter"),
    (q.get("state") || q.get("machine_type") || q.get("q")) ? h("a", { href: "/" }, "clear") : null);
  const total = h("span", { class: "muted", id: "total" });
  const body = h("tbody", { id: "runs" });
  const table = h("table", {}, h("thead", {}, h("tr", {},
    h("th", { class: "num" }, "ID"), h("th", {}, "State"), h("th", {}, "Type"), h("th", {}, "Command"),
    h("th", {}, "Created"), h("th", { class: "num" }, "Duration"), h("th", { class: "num" }, "Cost"), h("th", {}, "Pipeline"))), body);
  const pager = h("div", { class: "pager" });
  main.replaceChildren(h("div", { class: "bar" }, h("h1", {}, "Runs"), total, h("span", { class: "spacer" }), form), h("div", { class: "panel" }, table, pager));

  const params = new URLSearchParams();
  for (const k of ["state", "machine_type", "q", "before", "pipeline"]) if (q.get(k)) params.set(k, q.get(k));
  async function load() {
    const page = await api("/api/runs?" + params.toString());
    const now = Date.now();
    body.replaceChildren(...page.runs.map(r => {
      const dur = r.duration !== null ? r.duration : (r.created ? (now - new Date(r.created)) / 1000 : null);
      return h("tr", { "data-run": r.id },
        h("td", { class: "num" }, h("a", { href: "/runs/" + r.id }, String(r.id))),
        h("td", {}, badge(r.state, r.queue_position ? `${r.state_text} #${r.queue_position}` : r.state_text)),
        h("td", {}, r.machine_type),
        h("td", { class: "cmd mono", title: r.command }, r.command),
        h("td", {}, when(r.created)),
        h("td", { class: "num" }, duration(dur)),
        h("td", { class: "num" }, money(r.cost)),
        h("td", {}, r.pipeline !== null ? h("a", { href: "/pipelines/" + r.pipeline }, String(r.pipeline)) : ""));
    }));
    if (!page.runs.length) body.replaceChildren(h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No runs" + (params.toString() ? " match." : " yet: `conjure run \"echo hello\"` starts one."))));
    total.textContent = page.total !== null ? `${page.total.toLocaleString()} run${page.total === 1 ? "" : "s"}` : "";
    const links = [];
    if (q.get("before")) { const p = new URLSearchParams(params); p.delete("before"); links.push(h("a", { href: "/?" + p }, "« newest")); }
    if (page.next_before !== null) { const p = new URLSearchParams(params); p.set("before", page.next_before); links.push(h("a", { href: "/?" + p, rel: "next" }, "older »")); }
    pager.replaceChildren(...links);
  }
  await load();
  if (!q.get("before")) every(2000, load);
}

// --- one run -------------------------------------------------------------------------

function dlCard(rows) {
  return h("dl", { class: "card" }, ...rows.filter(r => r && r[1] !== null && r[1] !== undefined && r[1] !== "").flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function runCard(d) {
  const st = d.status, spec = st.spec, env = spec.environment;
  const image = st.image ? `${st.image}${st.image_source ? " (" + st.image_source + (st.image_pushed ? ", pushed" : "") + ")" : ""}` : null;
  const envBits = [];
  if (env.docker_image) envBits.push("docker image " + env.docker_image);
  if (env.framework && env.framework !== "default") envBits.push("framework " + env.framework);
  if (env.apt.length) envBits.push("apt: " + env.apt.join(" "));
  if (env.pip.length) envBits.push("pip: " + env.pip.join(" "));
  if (env.pip_req) envBits.push("--pip-req file");
  if (env.conda_file) envBits.push("--conda-file");
  const cached = st.image_cached === null ? null : (st.image_cached ? "yes (environment cached)" : "no (built for this run)");
  const mounts = spec.mounts.length ? h("ul", {}, ...spec.mounts.map((m, i) => h("li", { class: "mono" },
    `${m.source} → ${m.dest}` + (st.mounts_cached.length === spec.mounts.length ? (st.mounts_cached[i] ? " (cached)" : " (downloaded)") : "")))) : null;
  const envVars = Object.keys(spec.env).length ? h("ul", {}, ...Object.entries(spec.env).map(([k, v]) => h("li", { class: "mono" }, `${k}=${v}`))) : null;
  return dlCard([
    ["Status", badge(st.state, d.state_text)],
    ["Reason", st.reason],
    ["Command", h("code", {}, spec.command)],
    ["Machine type", `${spec.machine_type.name} (${spec.machine_type.vcpus} vCPU, ${spec.machine_type.memory_gb} GB${spec.machine_type.gpus ? ", " + spec.machine_type.gpus + " × " + spec.machine_type.gpu_model : ""})`],
    ["Machine", st.machine_id ? `${st.machine_id} (${st.reused_machine ? "idle machine reused" : "new machine"})` : null],
    ["Queue", d.queue_position ? `#${d.queue_position} waiting for a machine` : null],
    ["Environment", envBits.length ? envBits.join("; ") : "the base image"],
    ["Image", image],
    ["Cached", cached],
    ["Mounts", mounts],
    ["Variables", envVars],
    ["Stop when", st.stop_conditions.length ? st.stop_conditions.join("; ") : null],
    ["Stopped by", st.stopped_by],
    ["Exit code", st.exit_code],
    ["Hyper search", spec.hyper_id !== null && spec.hyper_id !== undefined ? h("a", { href: "/hypers/" + spec.hyper_id }, "search " + spec.hyper_id) : null],
    ["Pipeline", spec.pipeline_id !== null ? h("span", {}, h("a", { href: "/pipelines/" + spec.pipeline_id }, "pipeline " + spec.pipeline_id), ` (step ${spec.pipeline_step})`) : null],
    ["Created", when(d.created)],
    ["Duration", duration(d.total_seconds)],
    ["Cost", d.cost !== null ? `${money(d.cost)} ($${spec.machine_type.price_per_hour}/hour)` : null],
    ["Outputs", d.final ? `${st.outputs} file(s), ${bytes(st.output_bytes)}` : null],
  ]);
}

function codeCard(d) {
  const c = d.status.spec.code;
  return dlCard([
    ["Repository", c.github_url ? h("a", { href: c.github_url, rel: "noreferrer" }, c.github_url) : (c.repo_name || "not a git repository")],
    ["Ref", c.ref],
    ["Commit", c.commit ? h("code", {}, c.commit) : null],
    ["Directory", c.relative_cwd],
    ["Uncommitted changes", d.has_diff ? h("a", { href: `/api/runs/${d.status.run_id}/diff`, download: `run-${d.status.run_id}.diff`, id: "diff" }, "download the diff") : "none"],
  ]);
}

function timeline(st) {
  const tl = st.timeline;
  return h("ol", { class: "timeline" }, ...tl.map((c, i) => {
    const next = tl[i + 1];
    const spent = next ? (new Date(next.at) - new Date(c.at)) / 1000 : null;
    return h("li", {}, badge(c.state), h("span", { class: "muted" }, when(c.at) + (spent !== null ? ` (${duration(spent)})` : "")), h("span", {}, c.detail || ""));
  }));
}

async function runPage(runId) {
  setTitle("Run " + runId);
  let d;
  try { d = await api(`/api/runs/${runId}`); } catch (e) { return showError(e); }
  const title = h("h1", {}, "Run " + runId, h("span", { id: "state" }));
  const stopBtn = h("button", { class: "warn", id: "stop", onclick: () => control("stop") }, "Stop");
  const killBtn = h("button", { class: "danger", id: "kill", onclick: () => control("kill") }, "Kill");
  const temporal = h("a", { class: "ext", id: "temporal-link", target: "_blank", rel: "noreferrer" }, "workflow in Temporal ↗");
  const card = h("div", { id: "card" }), code = h("div", { id: "code" }), tl = h("div", { id: "timeline" });
  const log = h("pre", { class: "log", id: "log", "aria-label": "log" });
  const follow = h("input", { type: "checkbox", checked: true, id: "follow" });
  const charts = h("div", { class: "charts", id: "charts" }, h("p", { class: "muted" }, "No metrics yet."));
  const outputs = h("div", { id: "outputs" });
  main.replaceChildren(
    h("div", { class: "bar" }, title, h("span", { class: "spacer" }), temporal, stopBtn, killBtn),
    h("div", { class: "grid" },
      h("section", { class: "panel" }, h("h2", {}, "Run"), card),
      h("div", {}, h("section", { class: "panel" }, h("h2", {}, "Code"), code),
        h("section", { class: "panel" }, h("h2", {}, "Timeline"), tl))),
    h("section", { class: "panel" }, h("div", { class: "bar" }, h("h2", {}, "Log"), h("span", { class: "spacer" }),
      h("label", { class: "muted" }, follow, " follow"), h("a", { href: "#", id: "log-top", onclick: e => { e.preventDefault(); log.scrollTop = 0; } }, "top")), log),
    h("section", { class: "panel" }, h("h2", {}, "Metrics"), charts),
    h("section", { class: "panel" }, h("h2", {}, "Outputs"), outputs));

  let final = false;
  function render(d) {
    final = d.final;
    title.querySelector("#state").replaceChildren(badge(d.status.state, d.state_text));
    card.replaceChildren(runCard(d));
    code.replaceChildren(codeCard(d));
    tl.replaceChildren(timeline(d.status));
    stopBtn.hidden = killBtn.hidden = d.final;
    temporal.hidden = !d.temporal_url;
    if (d.temporal_url) temporal.href = d.temporal_url;
    setTitle(`Run ${runId} · ${d.state_text}`);
  }

  async function control(what) {
    const stop = what === "stop";
    const ok = await confirmDialog(stop ? `Stop run ${runId}?` : `Kill run ${runId}?`,
      stop ? "The command gets SIGTERM (then SIGKILL after the grace period); the files it wrote are saved."
           : "The command is killed at once; nothing it wrote is saved.", stop ? "Stop run" : "Kill run");
    if (!ok) return;
    try { const r = await post(`/api/runs/${runId}/${what}`); toast(r.message); } catch (e) { toast(e.message, true); }
  }

  let cursor = "", logBusy = null;
  async function pollLog() {
    // One reader at a time: the live timer and the last read after the end share a cursor.
    while (logBusy) await logBusy.catch(() => {});
    logBusy = readLog();
    try { await logBusy; } finally { logBusy = null; }
  }
  async function readLog() {
    for (let i = 0; i < 50; i++) {
      const page = await api(`/api/runs/${runId}/log?after=${encodeURIComponent(cursor)}${final ? "" : "&follow=1"}`);
      if (page.lines.length) {
        const atEnd = log.scrollHeight - log.scrollTop - log.clientHeight < 30;
        const frag = document.createDocumentFragment();
        for (const ln of page.lines) frag.appendChild(h("span", { class: ln.stream }, ln.text + "\n"));
        log.appendChild(frag);
        if (follow.checked && (atEnd || i > 0 || cursor === "")) log.scrollTop = log.scrollHeight;
      }
      cursor = page.cursor;
      if (!page.more) break;
    }
  }

  async function pollMetrics() {
    const m = await api(`/api/runs/${runId}/metrics`);
    if (!m.series.length) return;
    charts.replaceChildren(...m.series.map(s => {
      const useStep = !s.hardware && s.step.every(x => x !== null);
      const t0 = s.t.length ? s.t[0] : 0;
      const xs = s.hardware ? s.t.map(t => t - t0) : (useStep ? s.step : s.index);
      const last = s.value.length ? s.value[s.value.length - 1] : null;
      return h("div", { class: "chart", "data-metric": s.name },
        h("h3", {}, s.name, h("span", {}, ConjureChart.fmt(last))),
        ConjureChart.line(xs, s.value, { label: s.name, hardware: s.hardware, xName: s.hardware ? "seconds" : (useStep ? "step" : "value #"), xLabel: s.hardware ? (v => duration(v)) : undefined }));
    }));
  }

  async function loadOutputs() {
    outputs.replaceChildren(await outputsTree(runId, ""));
  }

  render(d);
  await Promise.all([pollLog(), pollMetrics().catch(() => {}), loadOutputs()]);
  if (!final) {
    const logTimer = every(400, pollLog);
    const metricTimer = every(2000, pollMetrics);
    const statusTimer = every(1000, async () => {
      const nd = await api(`/api/runs/${runId}`);
      const wasFinal = final;
      render(nd);
      if (nd.final && !wasFinal) {
        stopTimer(statusTimer); stopTimer(logTimer); stopTimer(metricTimer);
        await pollLog(); await pollMetrics(); await loadOutputs();
      }
    });
  }
}

async function outputsTree(runId, sub) {
  const listing = await api(`/api/runs/${runId}/outputs?path=${encodeURIComponent(sub)}`);
  if (!listing.entries.length) return h("p", { class: "muted" }, sub ? "Empty." : "No files saved (yet): they appear when the run saves.");
  const ul = h("ul", { class: "tree" + (sub ? "" : " root") });
  if (!sub) ul.appendChild(h("li", {}, h("a", { href: download(`runs/${runId}`), class: "dl" }, `all outputs (run-${runId}.tar.gz)`)));
  for (const e of listing.entries) {
    const rel = e.path.slice(`runs/${runId}/`.length);
    if (e.dir) {
      const kids = h("div", {});
      let open = false;
      const toggle = h("button", { class: "toggle", "aria-label": "open " + e.name, onclick: async () => {
        open = !open; toggle.textContent = open ? "▾" : "▸";
        kids.replaceChildren(open ? await outputsTree(runId, rel) : "");
      } }, "▸");
      ul.appendChild(h("li", { "data-path": e.path }, toggle, h("span", {}, e.name + "/"),
        h("a", { class: "dl", href: download(e.path) }, ".tar.gz"), kids));
    } else {
      ul.appendChild(h("li", { "data-path": e.path }, h("span", { class: "toggle" }, "·"),
        h("a", { href: download(e.path), download: e.name }, e.name), h("span", { class: "size" }, bytes(e.size))));
    }
  }
  return ul;
}

// --- pipelines -----------------------------------------------------------------------

async function pipelinesPage() {
  setTitle("Pipelines");
  const q = new URLSearchParams(location.search);
  const page = await api("/api/pipelines" + (q.get("before") ? "?before=" + encodeURIComponent(q.get("before")) : ""));
  const rows = page.pipelines.map(p => h("tr", {},
    h("td", { class: "num" }, h("a", { href: "/pipelines/" + p.id }, String(p.id))), h("td", {}, badge(p.status)),
    h("td", {}, when(p.created)), h("td", {}, when(p.ended)), h("td", {}, h("a", { href: "/?pipeline=" + p.id }, "runs"))));
  if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No pipelines yet: `conjure pipeline run pipeline.yaml` starts one.")));
  main.replaceChildren(h("div", { class: "bar" }, h("h1", {}, "Pipelines")),
    h("div", { class: "panel" }, h("table", {}, h("thead", {}, h("tr", {}, h("th", { class: "num" }, "ID"), h("th", {}, "Status"), h("th", {}, "Started"), h("th", {}, "Ended"), h("th", {}, ""))), h("tbody", {}, ...rows)),
      page.next_before !== null ? h("div", { class: "pager" }, h("a", { href: "/pipelines?before=" + page.next_before }, "older »")) : null));
}

// --- hyperparameter searches ---------------------------------------------------------

async function hyperPage(hid) {
  setTitle("Hyperparameter search " + hid);
  let d;
  try { d = await api(`/api/hypers/${hid}`); } catch (e) { return showError(e); }
  const st = d.status;
  const names = st.params.map(p => p.name);
  const metric = st.metric ? `${st.metric} (${st.metric_agg})` : null;
  const stop = h("button", { class: "warn", hidden: st.state !== "Running", onclick: async () => {
    if (!await confirmDialog(`Stop search ${hid}?`, "Its running runs are stopped (their files are saved); runs not started never start.", "Stop search")) return;
    try { toast((await post(`/api/hypers/${hid}/stop`)).message); } catch (e) { toast(e.message, true); }
  } }, "Stop");
  const rows = d.ranked.map(r => h("tr", {},
    h("td", { class: "num" }, r.run_id !== null ? h("a", { href: "/runs/" + r.run_id }, String(r.run_id)) : "-"),
    h("td", {}, badge(r.state)),
    ...names.map(n => h("td", {}, h("code", {}, r.params[n] ?? ""))),
    metric ? h("td", { class: "num" }, r.value !== null ? String(Number(r.value.toPrecision(6))) : "-") : null));
  const done = st.runs.filter(r => !["Pending", "Requested", "Building", "Mounting", "Running", "Saving", "Pushing"].includes(r.state)).length;
  main.replaceChildren(h("div", { class: "bar" }, h("h1", {}, `Hyperparameter search ${hid} · ${st.kind}`, badge(st.state)), h("span", { class: "spacer" }), stop),
    h("div", { class: "panel" }, dlCard([["Command", h("code", {}, st.command)], ["Metric", metric ? `${metric}, best is ${st.goal === "min" ? "lowest" : "highest"}` : null],
      ["Runs", `${done} of ${st.planned} ended`], ["Parallel", st.parallel || "no limit of its own"], ["Started", when(st.created)], ["Ended", when(st.ended)], ["Reason", st.reason]])),
    h("div", { class: "panel" }, h("h2", {}, "Runs, best first"), h("table", {}, h("thead", {}, h("tr", {}, h("th", { class: "num" }, "Run"), h("th", {}, "State"), ...names.map(n => h("th", {}, n)), metric ? h("th", { class: "num" }, metric) : null)), h("tbody", {}, ...rows))));
  if (st.state === "Running") every(2000, async () => { const n = await api(`/api/hypers/${hid}`); if (JSON.stringify(n.ranked) !== JSON.stringify(d.ranked) || n.status.state !== st.state) hyperPage(hid); });
}

async function pipelinePage(pid) {
  setTitle("Pipeline " + pid);
  let d;
  try { d = await api(`/api/pipelines/${pid}`); } catch (e) { return showError(e); }
  const st = d.status;
  const steps = new Map(st.steps.map(s => [s.name, s]));
  const stop = h("button", { class: "warn", hidden: st.state !== "Running", onclick: async () => {
    if (!await confirmDialog(`Stop pipeline ${pid}?`, "Its running steps are stopped (their files are saved); steps not started are skipped.", "Stop pipeline")) return;
    try { toast((await post(`/api/pipelines/${pid}/stop`)).message); } catch (e) { toast(e.message, true); }
  } }, "Stop");
  const resume = h("button", { hidden: st.state === "Running" || st.state === "Complete", onclick: async () => {
    try { const r = await post(`/api/pipelines/${pid}/resume`); toast(r.message); location.href = "/pipelines/" + r.state; } catch (e) { toast(e.message, true); }
  } }, "Resume");
  const list = h("ol", { class: "steps" }, ...d.steps.map(s => {
    const ss = steps.get(s.name) || {};
    return h("li", {}, h("strong", {}, s.name), " ", badge(ss.state || "Pending"),
      ss.run_id !== null && ss.run_id !== undefined ? h("span", {}, " run ", h("a", { href: "/runs/" + ss.run_id }, String(ss.run_id)), ss.run_state ? ` (${ss.run_state})` : "", ss.reused ? " reused" : "") : "",
      h("div", { class: "muted" }, h("code", {}, s.command), ` on ${s.machine_type}`, s.depends_on.length ? ` · after ${s.depends_on.join(", ")}` : ""),
      ss.reason ? h("div", { class: "muted" }, ss.reason) : null);
  }));
  main.replaceChildren(h("div", { class: "bar" }, h("h1", {}, `Pipeline ${pid}${st.name ? " · " + st.name : ""}`, badge(st.state)), h("span", { class: "spacer" }), stop, resume),
    h("div", { class: "panel" }, dlCard([["Started", when(st.created)], ["Ended", when(st.ended)], ["Reason", st.reason], ["Resumed from", st.resumed_from !== null ? h("a", { href: "/pipelines/" + st.resumed_from }, "pipeline " + st.resumed_from) : null]])),
    h("div", { class: "panel" }, h("h2", {}, "Steps"), list));
  if (st.state === "Running") every(2000, async () => { const n = await api(`/api/pipelines/${pid}`); if (JSON.stringify(n.status) !== JSON.stringify(st)) pipelinePage(pid); });
}

// --- machines ------------------------------------------------------------------------

async function machinesPage() {
  setTitle("Machines");
  const body = h("tbody", {});
  const note = h("span", { class: "muted" });
  main.replaceChildren(h("div", { class: "bar" }, h("h1", {}, "Machines"), note),
    h("div", { class: "panel" }, h("table", {}, h("thead", {}, h("tr", {}, ...["ID", "Type", "Provider", "State", "Idle since", "Runs", "Cost", "Run", ""].map(t => h("th", { class: t === "Runs" || t === "Cost" ? "num" : null }, t)))), body)));
  async function load() {
    const m = await api("/api/machines");
    note.textContent = !m.started ? "the pool starts with the first run" : (m.queue ? `${m.queue} run(s) waiting for a machine` : "");
    body.replaceChildren(...m.machines.map(x => h("tr", {},
      h("td", { class: "mono" }, x.id), h("td", {}, x.machine_type), h("td", {}, x.provider), h("td", {}, badge(x.state)),
      h("td", {}, when(x.idle_since)), h("td", { class: "num" }, String(x.runs_served)), h("td", { class: "num" }, money(x.cost)),
      h("td", {}, x.run_workflow_id ? h("a", { href: "/runs/" + x.run_workflow_id.replace("run-", "") }, x.run_workflow_id) : ""),
      h("td", {}, x.state === "terminating" ? "" : h("button", { class: "danger", onclick: async () => {
        const ok = await confirmDialog(`Terminate ${x.id}?`, x.state === "busy" ? "It finishes its run first, unless forced." : "The machine is shut down.", "Terminate", x.state === "busy" ? "now, interrupting its run" : null);
        if (!ok) return;
        try { toast((await post(`/api/machines/${encodeURIComponent(x.id)}/terminate${ok.checked ? "?force=true" : ""}`)).message); load(); } catch (e) { toast(e.message, true); }
      } }, "Terminate")))));
    if (!m.machines.length) body.replaceChildren(h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No machines.")));
  }
  await load();
  every(3000, load);
}

// --- resources -----------------------------------------------------------------------

async function resourcesPage(path) {
  setTitle("Resources");
  path = path.replace(/^\/+|\/+$/g, "");
  let listing;
  try { listing = await api("/api/resources?path=" + encodeURIComponent(path)); } catch (e) { return showError(e); }
  const parts = path ? path.split("/") : [];
  const crumbs = h("div", { class: "crumbs" }, h("a", { href: "/resources" }, "resources"), ...parts.flatMap((p, i) => [h("span", {}, "/"), h("a", { href: "/resources/" + parts.slice(0, i + 1).map(encodeURIComponent).join("/") }, p)]));
  const rows = listing.entries.map(e => h("tr", {},
    h("td", {}, e.dir ? h("a", { href: "/resources/" + e.path.split("/").map(encodeURIComponent).join("/") }, e.name + "/") : h("span", {}, e.name)),
    h("td", { class: "num" }, e.dir ? "" : bytes(e.size)),
    h("td", {}, path || e.dir ? h("a", { href: download(e.path), download: e.dir ? e.name + ".tar.gz" : e.name }, e.dir ? "download .tar.gz" : "download") : "")));
  if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 3, class: "muted" }, path ? "Empty." : "Nothing yet: runs' outputs, `conjure upload` and public datasets appear here.")));
  main.replaceChildren(h("div", { class: "bar" }, h("h1", {}, "Resources"), crumbs),
    h("div", { class: "panel" }, h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", { class: "num" }, "Size"), h("th", {}, ""))), h("tbody", {}, ...rows))));
}

// --- router --------------------------------------------------------------------------

async function route() {
  timers.forEach(clearInterval); timers = [];
  const p = location.pathname;
  let m;
  const nav = p === "/" || p.startsWith("/runs") ? "runs" : p.split("/")[1];
  document.querySelectorAll("[data-nav]").forEach(a => a.classList.toggle("active", a.dataset.nav === nav));
  try {
    if (!info) {
      info = await api("/api/info");
      const ui = document.getElementById("temporal-ui");
      if (info.temporal_ui) { ui.href = info.temporal_ui; ui.hidden = false; }
    }
    if (p === "/") return await runsPage();
    if ((m = p.match(/^\/runs\/(\d+)$/))) return await runPage(Number(m[1]));
    if (p === "/pipelines") return await pipelinesPage();
    if ((m = p.match(/^\/pipelines\/(\d+)$/))) return await pipelinePage(Number(m[1]));
    if ((m = p.match(/^\/hypers\/(\d+)$/))) return await hyperPage(Number(m[1]));
    if (p === "/machines") return await machinesPage();
    if (p === "/resources" || p.startsWith("/resources/")) return await resourcesPage(decodeURIComponent(p.slice("/resources".length)));
    showError(new Error("No such page."));
  } catch (e) {
    showError(e);
  }
}

route();
