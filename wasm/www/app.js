// The labeling page. Every number shown comes from kiln's own kernels (wasm: kiln-core on
// the CPU, or kiln-gpu's WGSL on WebGPU); this file only draws and keeps labels.
import init, { init_backend, transform, decode_preview } from "./pkg/kiln_wasm.js";

const $ = (id) => document.getElementById(id);
const store = window.localStorage;
const state = {
  files: [], // {name, bytes: Uint8Array | null, url?}
  selected: 0,
  labels: JSON.parse(store.getItem("kiln.labels") || "{}"),
  undo: [],
  last: null,
  backend: "cpu",
  server: false,
};

function audioSpecFromParams() {
  return { ops: [
    { op: "load_audio" },
    { op: "stft", n_fft: +$("n_fft").value, hop_length: +$("hop").value },
    { op: "magnitude", power: 2.0 },
    { op: "mel", n_mels: +$("n_mels").value, fmin: +$("fmin").value, fmax: +$("fmax").value },
    { op: "power_to_db" },
  ] };
}
function imageSpecFromParams() {
  const size = +$("size").value;
  return { ops: [
    { op: "decode_image", mode: "RGB" },
    { op: "resize", shorter_side: size, filter: $("filter").value },
    { op: "center_crop", height: size, width: size },
  ] };
}
function specs() {
  return { audio: $("audiospec").value, image: $("imagespec").value };
}
function setSpecs(audio, image) {
  $("audiospec").value = typeof audio === "string" ? audio : JSON.stringify(audio, null, 1);
  $("imagespec").value = typeof image === "string" ? image : JSON.stringify(image, null, 1);
  store.setItem("kiln.specs", JSON.stringify(specs()));
}

// The formats load_audio reads (by content; the extension only sorts files into audio and
// images here) and the types the browser's player needs for them.
const AUDIO_TYPES = { wav: "audio/wav", flac: "audio/flac", mp3: "audio/mpeg", ogg: "audio/ogg", oga: "audio/ogg" };
const extension = (name) => (name.match(/\.([^./]+)$/) || ["", ""])[1].toLowerCase();
const isAudio = (name) => extension(name) in AUDIO_TYPES;
const isMedia = (name) => isAudio(name) || /^(png|jpe?g|webp)$/.test(extension(name));
function labelSet() {
  return $("labelset").value.split(",").map((s) => s.trim()).filter(Boolean);
}
function saveLabels() {
  store.setItem("kiln.labels", JSON.stringify(state.labels));
  store.setItem("kiln.labelset", $("labelset").value);
  if (state.server) {
    fetch("/api/labels", { method: "PUT", headers: { "content-type": "text/csv" }, body: toCsv() });
  }
}
function toCsv() {
  const rows = state.files.map((f) => [f.name, state.labels[f.name] ?? ""]).filter((r) => r[1] !== "");
  const esc = (s) => (/[",\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s);
  return "path,label\n" + rows.map((r) => r.map(esc).join(",")).join("\n") + (rows.length ? "\n" : "");
}
function toJson() {
  return JSON.stringify(state.files.filter((f) => state.labels[f.name]).map((f) => ({ path: f.name, label: state.labels[f.name] })));
}
function download(name, text, type) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type }));
  a.download = name;
  a.click();
}

function renderList() {
  const ul = $("files");
  ul.innerHTML = "";
  state.files.forEach((f, i) => {
    const li = document.createElement("li");
    li.className = i === state.selected ? "sel" : "";
    li.innerHTML = `<span></span><span class="lbl"></span>`;
    li.children[0].textContent = f.name;
    li.children[1].textContent = state.labels[f.name] ?? "";
    li.onclick = () => select(i);
    ul.appendChild(li);
  });
  const bar = $("labels");
  bar.innerHTML = "";
  labelSet().forEach((l, i) => {
    const b = document.createElement("button");
    b.textContent = `${i + 1}: ${l}`;
    b.onclick = () => assign(l);
    bar.appendChild(b);
  });
}
function assign(label) {
  const f = state.files[state.selected];
  if (!f) return;
  state.undo.push([f.name, state.labels[f.name]]);
  state.labels[f.name] = label;
  saveLabels();
  renderList();
}
function undo() {
  const last = state.undo.pop();
  if (!last) return;
  if (last[1] === undefined) delete state.labels[last[0]];
  else state.labels[last[0]] = last[1];
  saveLabels();
  renderList();
}

// Viridis, sampled at 9 points and interpolated: perceptually uniform.
const VIRIDIS = [[68,1,84],[71,44,122],[59,81,139],[44,113,142],[33,144,141],[39,173,129],[92,200,99],[170,220,50],[253,231,37]];
function colormap(t) {
  t = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(t)), f = t - i;
  return VIRIDIS[i].map((a, k) => Math.round(a + (VIRIDIS[i + 1][k] - a) * f));
}

function drawSpectrogram(result, sampleRate, hop) {
  const [rows, frames] = result.shape.slice(-2);
  const data = result.data;
  const c = $("view"), ctx = c.getContext("2d");
  const left = 50, bottom = 24, w = c.width - left, h = c.height - bottom;
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, c.width, c.height);
  let lo = Infinity, hi = -Infinity;
  for (let i = 0; i < rows * frames; i++) { lo = Math.min(lo, data[i]); hi = Math.max(hi, data[i]); }
  const img = ctx.createImageData(frames, rows);
  for (let r = 0; r < rows; r++) for (let t = 0; t < frames; t++) {
    const [R, G, B] = colormap((data[r * frames + t] - lo) / (hi - lo || 1));
    const o = ((rows - 1 - r) * frames + t) * 4; // low frequencies at the bottom
    img.data[o] = R; img.data[o + 1] = G; img.data[o + 2] = B; img.data[o + 3] = 255;
  }
  const tmp = new OffscreenCanvas(frames, rows);
  tmp.getContext("2d").putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(tmp, left, 0, w, h);
  ctx.fillStyle = "#000"; ctx.font = "11px sans-serif";
  const seconds = (frames * hop) / sampleRate;
  for (let k = 0; k <= 5; k++) {
    const x = left + (w * k) / 5;
    ctx.fillText(((seconds * k) / 5).toFixed(2) + " s", Math.min(x - 12, c.width - 40), c.height - 6);
  }
  for (let k = 0; k <= 4; k++) {
    const y = h - (h * k) / 4;
    ctx.fillText(`${Math.round((rows * k) / 4)}`, 24, Math.max(10, y + 4));
  }
  ctx.save(); ctx.translate(12, h / 2 + 20); ctx.rotate(-Math.PI / 2); ctx.fillText("mel band", 0, 0); ctx.restore();
  c.onmousemove = (e) => {
    const t = Math.floor(((e.offsetX - left) / w) * frames), r = rows - 1 - Math.floor((e.offsetY / h) * rows);
    if (t >= 0 && t < frames && r >= 0 && r < rows) $("hover").textContent = `frame ${t}, band ${r}: ${data[r * frames + t].toFixed(3)}`;
  };
}

function drawWave(samples) {
  const c = $("wave"), ctx = c.getContext("2d");
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, c.width, c.height);
  ctx.strokeStyle = "#36c"; ctx.beginPath();
  const step = Math.max(1, Math.floor(samples.length / c.width));
  for (let x = 0; x < c.width; x++) {
    let lo = 1, hi = -1;
    for (let i = x * step; i < Math.min(samples.length, (x + 1) * step); i++) { lo = Math.min(lo, samples[i]); hi = Math.max(hi, samples[i]); }
    ctx.moveTo(x, c.height / 2 - hi * c.height / 2); ctx.lineTo(x, c.height / 2 - lo * c.height / 2);
  }
  ctx.stroke();
}

function drawImage(result) {
  const c = $("view"), ctx = c.getContext("2d");
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, c.width, c.height);
  let [h, w, ch] = result.shape.length === 2 ? [...result.shape, 1] : result.shape;
  const chw = result.shape.length === 3 && result.shape[0] <= 4 && result.shape[2] > 4;
  if (chw) [ch, h, w] = result.shape;
  const data = result.data;
  let lo = 0, hi = 255;
  if (result.dtype === "float32") { lo = Infinity; hi = -Infinity; for (const v of data) { lo = Math.min(lo, v); hi = Math.max(hi, v); } }
  const at = (y, x, k) => chw ? data[(k * h + y) * w + x] : data[(y * w + x) * ch + k];
  const img = ctx.createImageData(w, h);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let k = 0; k < 3; k++) {
    img.data[(y * w + x) * 4 + k] = Math.round(((at(y, x, Math.min(k, ch - 1)) - lo) / (hi - lo || 1)) * 255);
    img.data[(y * w + x) * 4 + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  c.onmousemove = (e) => {
    const x = e.offsetX, y = e.offsetY;
    if (x < w && y < h) $("hover").textContent = `(${y}, ${x}): ` + [...Array(ch).keys()].map((k) => at(y, x, k).toFixed?.(4) ?? at(y, x, k)).join(", ");
  };
}

async function bytesOf(f) {
  if (!f.bytes) f.bytes = new Uint8Array(await (await fetch(f.url)).arrayBuffer());
  return f.bytes;
}

async function compute(f) {
  const bytes = await bytesOf(f);
  const spec = isAudio(f.name) ? specs().audio : specs().image;
  const t0 = performance.now();
  const result = await transform(spec, bytes);
  result.ms = performance.now() - t0;
  return result;
}

async function select(i) {
  if (!state.files.length) return;
  state.selected = Math.max(0, Math.min(state.files.length - 1, i));
  renderList();
  const f = state.files[state.selected];
  try {
    const result = await compute(f);
    state.last = { name: f.name, ...result };
    if (isAudio(f.name)) {
      const wave = decode_preview(await bytesOf(f), true);
      drawWave(wave.data);
      const spec = JSON.parse(specs().audio);
      const hop = spec.ops.find((o) => o.op === "stft")?.hop_length ?? 512;
      drawSpectrogram(result, wave.sample_rate, hop);
      $("player").src = URL.createObjectURL(new Blob([f.bytes], { type: AUDIO_TYPES[extension(f.name)] }));
    } else {
      $("wave").getContext("2d").clearRect(0, 0, 900, 80);
      drawImage(result);
    }
    $("status").textContent = `${f.name}: ${result.shape.join("×")} ${result.dtype} — backend ${result.backend}, kernel ${result.ms.toFixed(1)} ms`;
  } catch (e) {
    state.last = { name: f.name, error: String(e) };
    $("status").textContent = `${f.name}: ${e}`;
  }
}

function addFiles(list) {
  for (const file of list) {
    if (!isMedia(file.name)) continue;
    const name = file.webkitRelativePath || file.name;
    const entry = { name, bytes: null, file };
    entry.url = URL.createObjectURL(file);
    state.files.push(entry);
  }
  state.files.sort((a, b) => a.name.localeCompare(b.name));
  renderList();
  select(state.selected);
}

document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "TEXTAREA" || e.target.tagName === "INPUT") return;
  if (e.key === "ArrowDown" || e.key === "ArrowRight") { select(state.selected + 1); e.preventDefault(); }
  else if (e.key === "ArrowUp" || e.key === "ArrowLeft") { select(state.selected - 1); e.preventDefault(); }
  else if ((e.key === "z" && (e.ctrlKey || e.metaKey)) || e.key === "u") undo();
  else if (/^[1-9]$/.test(e.key)) { const l = labelSet()[+e.key - 1]; if (l) assign(l); }
});

async function main() {
  await init();
  const params = new URLSearchParams(location.search);
  const wantGpu = params.get("backend") !== "cpu" && !!navigator.gpu;
  const chosen = await init_backend(wantGpu);
  state.backend = chosen.backend;
  $("labelset").value = store.getItem("kiln.labelset") || $("labelset").value;
  const saved = JSON.parse(store.getItem("kiln.specs") || "null");
  if (saved) setSpecs(saved.audio, saved.image); else setSpecs(audioSpecFromParams(), imageSpecFromParams());
  $("status").textContent = `backend: ${state.backend}${chosen.reason ? " (" + chosen.reason + ")" : ""}`;
  $("pick").onchange = (e) => addFiles(e.target.files);
  $("pickdir").onchange = (e) => addFiles(e.target.files);
  document.body.ondragover = (e) => e.preventDefault();
  document.body.ondrop = (e) => { e.preventDefault(); addFiles(e.dataTransfer.files); };
  $("labelset").onchange = () => { saveLabels(); renderList(); };
  $("apply").onclick = () => { setSpecs(specs().audio, specs().image); select(state.selected); };
  $("specfile").onchange = async (e) => {
    const text = await e.target.files[0].text();
    const spec = JSON.parse(text);
    const audio = spec.ops?.[0]?.op === "load_audio";
    setSpecs(audio ? text : specs().audio, audio ? specs().image : text);
    select(state.selected);
  };
  $("fromparams").onclick = () => { setSpecs(audioSpecFromParams(), imageSpecFromParams()); select(state.selected); };
  $("csv").onclick = () => download("labels.csv", toCsv(), "text/csv");
  $("json").onclick = () => download("labels.json", toJson(), "application/json");
  // Served by `kiln serve --dir`: list the dataset and keep labels on the server too.
  const listing = await fetch("/api/files").then((r) => (r.ok ? r.json() : null)).catch(() => null);
  if (listing) {
    state.server = true;
    const serverLabels = await fetch("/api/labels").then((r) => (r.ok ? r.text() : "")).catch(() => "");
    for (const line of serverLabels.split("\n").slice(1)) {
      const i = line.lastIndexOf(",");
      if (i > 0 && !(line.slice(0, i) in state.labels)) state.labels[line.slice(0, i)] = line.slice(i + 1);
    }
    state.files = listing.files.map((name) => ({ name, bytes: null, url: "/files/" + name.split("/").map(encodeURIComponent).join("/") }));
    renderList();
    await select(0);
  }
}

// The documented test hook: what the page computed, so a browser test can compare it with
// `kiln transform` on the same file and spec.
window.kilnTest = {
  ready: null,
  backend: () => state.backend,
  files: () => state.files.map((f) => f.name),
  setSpecs: (audio, image) => setSpecs(audio, image),
  compute: async (name) => {
    const f = state.files.find((x) => x.name === name);
    const r = await compute(f);
    return { shape: r.shape, dtype: r.dtype, backend: r.backend, ms: r.ms, data: Array.from(r.data) };
  },
  select: (i) => select(i),
  selected: () => state.files[state.selected]?.name,
  labels: () => ({ ...state.labels }),
  exportCsv: () => toCsv(),
  exportJson: () => toJson(),
  status: () => $("status").textContent,
};
window.kilnTest.ready = main();
