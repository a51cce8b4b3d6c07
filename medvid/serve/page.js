"use strict";
// The page of `medvid serve`: builds the form from /api/info, polls the queue, renders the gallery.
// Every value from the server is put into the page as text (textContent), never as HTML.

const $ = (id) => document.getElementById(id);
let info = null;
let lastDone = "";
let pollTimer = null;

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

async function api(path, options = {}) {
  const r = await fetch(path, options);
  let body = null;
  try { body = await r.json(); } catch (_) { body = { error: `the server answered ${r.status}` }; }
  return { ok: r.ok, status: r.status, body };
}

function duration(s) {
  if (s == null) return "";
  if (s < 10) return `${Math.max(0, s).toFixed(1)} s`;
  s = Math.round(s);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${s % 60} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

// ------------------------------------------------------------------------------------------ form

function buildForm() {
  const c = info.capabilities, lim = info.limits;
  const cond = { text: "text prompts", class: `${c.num_classes} classes`, none: "unconditional" }[c.conditioning];
  const model = $("model-info");
  model.textContent = "";
  model.append(el("b", { text: c.model === "wan" ? "Wan2.1" : "MedSora" }), ` · ${cond} · checkpoint ${c.checkpoint_name}`,
    c.lora ? " + LoRA" : "", ` · ${info.device}`);
  if (c.conditioning === "text") {
    $("row-prompt").hidden = false;
    $("prompt-max").textContent = lim.max_prompt_chars;
    $("prompt").maxLength = lim.max_prompt_chars;
    $("row-negative").hidden = c.negative_prompt == null;
    $("negative_prompt").value = c.negative_prompt || "";
    $("negative_prompt").placeholder = c.model === "medsora" ? "empty: the model's own unconditional branch" : "";
  } else if (c.conditioning === "class") {
    $("row-class").hidden = false;
    for (let i = 0; i < c.num_classes; i++) $("class_id").append(el("option", { value: i, text: `class ${i}` }));
  } else {
    $("row-none").hidden = false;
    $("row-none").textContent = c.notes.join(" ");
  }
  $("row-image").hidden = !c.first_frame;
  $("steps").value = Math.min(c.steps, lim.max_steps);
  $("steps").max = lim.max_steps;
  if (c.guidance == null) $("row-guidance").hidden = true;
  else { $("guidance").value = c.guidance; $("guidance").max = lim.max_guidance; }
  if (c.num_frames == null) { $("num_frames").hidden = true; $("frames-fixed").hidden = false; }
  else { $("num_frames").value = Math.min(c.num_frames, lim.max_frames); $("num_frames").max = lim.max_frames; }
  randomSeed();
  updateCount();
  renderReports(info.reports);
}

function randomSeed() { $("seed").value = Math.floor(Math.random() * 2 ** 31); }
function updateCount() { $("prompt-count").textContent = $("prompt").value.length; }

function readImage(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result);
    r.onerror = () => reject(new Error("the image could not be read"));
    r.readAsDataURL(file);
  });
}

function showError(message, field) {
  document.querySelectorAll(".invalid").forEach((e) => e.classList.remove("invalid"));
  $("form-error").hidden = !message;
  $("form-error").textContent = message || "";
  if (field && $(field)) { $(field).classList.add("invalid"); $(field).focus(); }
}

async function submitForm(ev) {
  ev.preventDefault();
  const c = info.capabilities;
  const body = { seed: $("seed").value, steps: $("steps").value };
  if (c.conditioning === "text") {
    body.prompt = $("prompt").value;
    if (c.negative_prompt != null) body.negative_prompt = $("negative_prompt").value;
  } else if (c.conditioning === "class") body.class_id = $("class_id").value;
  if (c.guidance != null) body.guidance = $("guidance").value;
  if (c.num_frames != null) body.num_frames = $("num_frames").value;
  const file = c.first_frame ? $("image").files[0] : null;
  if (file) {
    if (file.size > info.limits.max_image_mb * 2 ** 20) {
      showError(`First frame: the file is larger than ${info.limits.max_image_mb} MB; use a smaller image`, "image");
      return;
    }
    try { body.image = await readImage(file); } catch (e) { showError(`First frame: ${e.message}`, "image"); return; }
  }
  $("generate").disabled = true;
  $("form-status").textContent = "";
  showError("");
  try {
    const r = await api("/api/jobs", { method: "POST", headers: { "Content-Type": "application/json" },
                                       body: JSON.stringify(body) });
    if (!r.ok) { showError(r.body.error || `the server answered ${r.status}`, r.body.field); return; }
    showError("");
    $("form-status").textContent = `Queued as job ${r.body.job.id}.`;
    randomSeed();
    refreshJobs();
  } catch (e) {
    showError("The server could not be reached. Is `medvid serve` still running?");
  } finally {
    $("generate").disabled = false;
  }
}

// ----------------------------------------------------------------------------------------- queue

function jobTitle(j) {
  const p = j.params || {};
  if (p.prompt) return p.prompt;
  if (p.class_id != null) return `class ${p.class_id}`;
  return "unconditional sample";
}

function jobDetail(j) {
  const seed = `seed ${j.params.seed}`;
  if (j.status === "running") {
    if (!j.total) return `${j.message} · ${seed}`;
    const pct = Math.round((100 * j.step) / j.total);
    const eta = j.step < j.total ? (j.eta != null ? ` · about ${duration(j.eta)} left` : " · estimating time left") : "";
    const what = j.step < j.total ? `step ${j.step} of ${j.total}` : j.message;
    return `${what} · ${pct}%${eta}`;
  }
  if (j.status === "queued") return `waiting · ${j.params.steps} steps · ${seed}${j.message ? " · " + j.message : ""}`;
  if (j.status === "done") return `100% · ${j.message}`;
  return j.message;
}

function renderJobs(jobs, model) {
  const list = $("jobs");
  list.textContent = "";
  $("jobs-empty").hidden = jobs.length > 0;
  const active = jobs.filter((j) => j.status === "queued" || j.status === "running").length;
  const summary = $("queue-summary");
  summary.classList.toggle("bad", Boolean(model.error));
  if (model.error) summary.textContent = `The model could not be loaded: ${model.error}`;
  else if (!model.ready) summary.textContent = "loading the model…";
  else summary.textContent = active ? `${active} waiting or running` : "";
  for (const j of jobs) {
    const head = el("div", { class: "job-head" },
      el("span", { class: "job-title", title: jobTitle(j), text: `#${j.id} ${jobTitle(j)}` }),
      el("span", { class: `pill ${j.status}`, text: j.status }));
    if (j.status === "queued" || j.status === "running") {
      const b = el("button", { type: "button", class: "small cancel", text: "Cancel" });
      b.addEventListener("click", () => cancelJob(j.id, b));
      head.append(b);
    } else if (j.status === "done" && j.video) {
      const a = el("a", { href: `#video-${j.video.replace(/\.mp4$/, "")}`, class: "small", text: "View" });
      head.append(a);
    }
    const item = el("li", { class: `job ${j.status}`, "data-job-id": j.id, "data-status": j.status }, head);
    if (j.status === "running" || j.status === "done") {
      const bar = el("progress", { max: j.status === "done" ? 1 : (j.total || 1), "aria-label": `job ${j.id} progress` });
      bar.value = j.status === "done" ? 1 : j.step;
      item.append(bar);
    }
    item.append(el("div", { class: "job-detail", text: jobDetail(j) }));
    list.append(item);
  }
  return active;
}

async function cancelJob(id, button) {
  button.disabled = true;
  const r = await api(`/api/jobs/${id}/cancel`, { method: "POST", headers: { "Content-Type": "application/json" },
                                                  body: "{}" });
  if (!r.ok) showError(r.body.error);
  refreshJobs();
}

async function refreshJobs() {
  clearTimeout(pollTimer);
  let active = 0;
  try {
    const r = await api("/api/jobs");
    if (r.ok) {
      active = renderJobs(r.body.jobs, r.body.model);
      if (!r.body.model.ready && !r.body.model.error) active = Math.max(active, 1);  // poll until it is loaded
      const done = r.body.jobs.filter((j) => j.status === "done").map((j) => j.id).join(",");
      if (done !== lastDone) { lastDone = done; refreshGallery(); }
    }
  } finally {
    pollTimer = setTimeout(refreshJobs, active ? 700 : 3000);
  }
}

// --------------------------------------------------------------------------------------- gallery

const LABELS = { text_alignment: "Text alignment", medical_plausibility: "Medical plausibility",
                 visual_quality: "Visual quality" };

function facts(meta, created) {
  const s = meta.settings || {};
  const rows = [];
  if (meta.negative_prompt) rows.push(["Negative", meta.negative_prompt]);
  if (s.class_id != null) rows.push(["Class", String(s.class_id)]);
  rows.push(["Seed", String(meta.seed)]);
  const st = [s.steps != null ? `${s.steps} steps` : null, s.sampler || null,
              s.guidance != null ? `guidance ${s.guidance}` : null].filter(Boolean).join(" · ");
  if (st) rows.push(["Sampling", st]);
  rows.push(["Video", `${meta.frames} frames · ${meta.width}×${meta.height}` + (s.fps ? ` · ${s.fps} fps` : "")]);
  rows.push(["Model", `${meta.model} · ${String(meta.checkpoint || "").split("/").filter(Boolean).pop() || ""}` +
             (meta.lora ? " + LoRA" : "")]);
  const when = new Date(created * 1000).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
  rows.push(["Made", meta.seconds != null ? `${when} · in ${duration(meta.seconds)}` : when]);
  const dl = el("dl", { class: "facts" });
  for (const [k, v] of rows) dl.append(el("dt", { text: k }), el("dd", { text: v }));
  return dl;
}

function scores(judge) {
  if (!judge.length) return null;
  const box = el("div", { class: "scores" });
  for (const j of judge) {
    box.append(el("span", { class: "score-label", title: j.model || "", text: "VLM judge" }));
    for (const [k, v] of Object.entries(j.scores)) {
      if (v == null) continue;
      const chip = el("span", { class: "score", title: (j.reasons || {})[k] || "" },
        `${LABELS[k] || k} `, el("b", { text: String(v) }));
      box.append(chip);
    }
  }
  return box.querySelector(".score") ? box : null;
}

function renderGallery(videos) {
  const g = $("gallery");
  $("gallery-empty").hidden = videos.length > 0;
  $("gallery-count").textContent = videos.length ? `${videos.length} video${videos.length > 1 ? "s" : ""}` : "";
  const playing = new Set([...g.querySelectorAll("video")].filter((v) => !v.paused).map((v) => v.dataset.name));
  g.textContent = "";
  for (const v of videos) {
    const m = v.meta;
    const video = el("video", { src: v.video, controls: "", loop: "", muted: "", playsinline: "",
                                preload: "metadata", "data-name": v.name });
    video.muted = true;
    if (playing.has(v.name)) video.autoplay = true;
    const title = m.prompt || (m.settings && m.settings.class_id != null ? `class ${m.settings.class_id}` : v.name);
    const body = el("div", { class: "video-body" }, el("div", { class: "video-prompt", text: title }), facts(m, v.created),
      scores(v.judge),
      el("div", { class: "links" },
        el("a", { href: `${v.video}?download=1`, text: "Download video" }),
        el("a", { href: v.sidecar, target: "_blank", rel: "noopener", text: "Settings (JSON)" })));
    g.append(el("article", { class: "video-card", id: `video-${v.name}`, "data-name": v.name }, video, body));
  }
}

function renderReports(reports) {
  const box = $("reports");
  box.textContent = "";
  for (const r of reports) {
    box.append(el("a", { href: r.url, target: "_blank", rel: "noopener",
                         text: reports.length > 1 ? `Evaluation report (${r.title})` : "Evaluation report" }));
  }
}

async function refreshGallery() {
  const r = await api("/api/gallery");
  if (r.ok) { renderGallery(r.body.videos); renderReports(r.body.reports); }
}

async function start() {
  const r = await api("/api/info");
  if (!r.ok) { showError(r.body.error || "the server could not describe its model"); return; }
  info = r.body;
  buildForm();
  $("job-form").addEventListener("submit", submitForm);
  $("seed-random").addEventListener("click", randomSeed);
  $("prompt").addEventListener("input", updateCount);
  refreshJobs();
  refreshGallery();
}

document.addEventListener("DOMContentLoaded", start);
