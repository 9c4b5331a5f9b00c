// medimg workbench: the browser side of `medimg serve`. It only talks to the HTTP API (docs/web.md).
import { Niivue, NVImage, SLICE_TYPE, MULTIPLANAR_TYPE, SHOW_RENDER } from "@niivue/niivue";
import { api, ApiError } from "./api.js";

// Same colours as medimg's reports, seg.nrrd and overlays (medimg/report_colors.py).
const PALETTE = [
  [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240],
  [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255], [170, 110, 40],
  [255, 250, 200], [128, 0, 0], [170, 255, 195], [128, 128, 0], [255, 215, 180], [0, 0, 128], [128, 128, 128],
];
// A review's difference map: 1 both (green), 2 prediction only = false positive (red), 3 reference only = false
// negative (blue).
const REVIEW_COLORS = { 1: [60, 180, 75], 2: [230, 25, 75], 3: [0, 130, 200] };
const labelColor = (v) =>
  v === 0 ? [0, 0, 0] : state.review && REVIEW_COLORS[v] ? REVIEW_COLORS[v] : PALETTE[(v - 1) % PALETTE.length];

// Window presets in Hounsfield units: [width, level].
const WINDOWS = { soft: [400, 40], lung: [1500, -600], bone: [1800, 400] };

const $ = (id) => document.getElementById(id);

const state = {
  image: null, // POST /api/images response
  path: null,
  labelNames: {}, // value -> name
  object: null, // current object (label value) for prompts
  promptMode: false,
  promptTool: "click", // click | box | scribble | lasso
  stroke: null, // the box / scribble / lasso being drawn: {tool, axCorSag, ltwh, axis, slice, voxels, screen, positive}
  labelUpdates: { region: 0, reload: 0 }, // how the overlay followed each prompt (changed box only, or a reload)
  drawing: null, // null | "brush" | "eraser"
  busy: false,
  lastPrompt: null, // {voxel, positive, ms, roundTripMs, voxels}
  location: null, // {voxel, lps, value, label}
  opsDone: 0, // finished server operations (scripts and tests wait on it)
};

const nv = new Niivue({
  backColor: [0.07, 0.07, 0.09, 1],
  show3Dcrosshair: true,
  crosshairColor: [1, 0.85, 0.2, 0.8],
  crosshairWidth: 1,
  crosshairWidthUnit: "mm",
  crosshairGap: 3,
  isColorbar: false,
  dragAndDropEnabled: false,
  multiplanarShowRender: SHOW_RENDER.ALWAYS,
  multiplanarLayout: MULTIPLANAR_TYPE.GRID,
});

function setStatus(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

function fail(err) {
  console.error(err);
  setStatus(err instanceof ApiError ? `${err.status}: ${err.message}` : String(err.message || err), true);
}

// ---------------------------------------------------------------- geometry (medimg voxel <-> NiiVue)

function baseVolume() {
  return nv.volumes.length > 0 ? nv.volumes[0] : null;
}

function labelVolume() {
  return nv.volumes.length > 1 ? nv.volumes[1] : null;
}

function asMatrix3(direction) {
  // The API gives the direction as a 3x3 (row-major) nested list or a flat list of 9 (or 4 in 2D).
  const flat = direction.flat ? direction.flat() : direction;
  const n = Math.round(Math.sqrt(flat.length));
  return Array.from({ length: n }, (_, r) => flat.slice(r * n, r * n + n));
}

/** World LPS mm of a medimg voxel index (x, y, z), from the geometry the server reported. */
function voxelToLps(vox) {
  const g = state.image;
  const d = asMatrix3(g.direction);
  const n = d.length;
  const out = [];
  for (let r = 0; r < n; r++) {
    let s = g.origin[r];
    for (let c = 0; c < n; c++) s += d[r][c] * g.spacing[c] * vox[c];
    out.push(s);
  }
  return out;
}

/** The medimg voxel index under a NiiVue fractional texture position (the served NIfTI's i, j, k). */
function fracToVoxel(frac) {
  const vol = baseVolume();
  const mm = nv.frac2mm(frac);
  return Array.from(vol.mm2vox([mm[0], mm[1], mm[2]])).map((v) => Math.round(v));
}

function voxelToFrac(vox) {
  const vol = baseVolume();
  const mm = vol.vox2mm(vox, vol.matRAS);
  return nv.mm2frac(mm);
}

function inBounds(vox) {
  const shape = state.image.shape;
  return vox.every((v, i) => i >= shape.length || (v >= 0 && v < shape[i]));
}

function dpr() {
  return nv.uiData?.dpr || window.devicePixelRatio || 1;
}

/** Voxel under a mouse event on a 2D tile, or null (3D render tile, outside the volume). */
function voxelAtEvent(ev) {
  const rect = nv.canvas.getBoundingClientRect();
  const pos = [(ev.clientX - rect.left) * dpr(), (ev.clientY - rect.top) * dpr()];
  const frac = nv.canvasPos2frac(pos);
  if (!frac || frac[0] < 0 || frac.some((f) => f < 0 || f > 1)) return null;
  const vox = fracToVoxel(frac);
  return inBounds(vox) ? vox : null;
}

/** Canvas (device) pixel position of a mouse event. */
function canvasPos(ev) {
  const rect = nv.canvas.getBoundingClientRect();
  return [(ev.clientX - rect.left) * dpr(), (ev.clientY - rect.top) * dpr()];
}

/** The 2D tile under a canvas position: {axCorSag, ltwh}, or null (3D render tile, outside every tile). */
function tileAt(pos) {
  const i = nv.tileIndex(pos[0], pos[1]);
  if (i < 0) return null;
  const tile = nv.screenSlices[i];
  return tile.axCorSag <= SLICE_TYPE.SAGITTAL ? { axCorSag: tile.axCorSag, ltwh: tile.leftTopWidthHeight } : null;
}

function clampToTile(pos, ltwh) {
  return [
    Math.min(Math.max(pos[0], ltwh[0] + 0.5), ltwh[0] + ltwh[2] - 0.5),
    Math.min(Math.max(pos[1], ltwh[1] + 0.5), ltwh[1] + ltwh[3] - 0.5),
  ];
}

/** The medimg voxel axis a 2D tile looks along (axial: the image axis closest to S, ...); 2 for 2D images. */
function sliceAxis(axCorSag) {
  if (state.image.shape.length < 3) return 2;
  const perm = baseVolume().permRAS; // RAS axis r shows voxel axis |perm[r]| - 1
  return Math.abs(perm[2 - axCorSag]) - 1;
}

/** Voxel under a canvas position kept inside one tile, clamped to the image, on the stroke's slice. */
function strokeVoxel(pos, st) {
  const frac = nv.canvasPos2frac(clampToTile(pos, st.ltwh));
  if (!frac || frac[0] < -0.5) return null;
  const shape = [...state.image.shape, 1, 1].slice(0, 3);
  const vox = fracToVoxel(frac).map((v, i) => Math.min(Math.max(v, 0), shape[i] - 1));
  if (st.slice !== undefined) vox[st.axis] = st.slice;
  return vox;
}

/** Move the crosshair to a voxel (so the 2D tiles show its slices). */
function moveCrosshairToVoxel(vox) {
  nv.scene.crosshairPos = voxelToFrac(vox);
  nv.updateGLVolume();
  nv.drawScene();
  nv.createOnLocationChange();
}

/** Page (client) coordinates of a voxel's centre on the axial tile (or the first 2D tile showing it). */
function voxelToClient(vox, sliceType = SLICE_TYPE.AXIAL) {
  const frac = voxelToFrac(vox);
  const hit = nv.frac2canvasPosWithTile(frac, sliceType) || { pos: nv.frac2canvasPos(frac) };
  if (!hit || !hit.pos) return null;
  const rect = nv.canvas.getBoundingClientRect();
  return { x: rect.left + hit.pos[0] / dpr(), y: rect.top + hit.pos[1] / dpr() };
}

// ---------------------------------------------------------------- worklist

async function loadWorklist() {
  const list = $("worklist");
  try {
    const items = await api.get("/api/worklist");
    list.innerHTML = "";
    fillLabelFiles(items);
    if (items.length === 0) list.innerHTML = '<li class="muted">no images under the served folders</li>';
    for (const item of items) {
      const li = document.createElement("li");
      li.className = "item";
      li.dataset.path = item.path;
      li.title = item.path + (item.labels.length ? `\nlabels: ${item.labels.join(", ")}` : "");
      const st = document.createElement("span");
      st.className = "st";
      const when = item.at ? ` ${item.at.slice(0, 16).replace("T", " ")}` : "";
      st.textContent = item.status + (item.by ? ` · ${item.by}${when}` : "") + (item.labels.length ? ` · ${item.labels.length} label file(s)` : "");
      li.dataset.status = item.status;
      li.append(document.createTextNode(item.name || item.path), st);
      li.addEventListener("click", () => openImage(item.path).catch(fail));
      list.append(li);
    }
  } catch (err) {
    list.innerHTML = '<li class="muted">worklist unavailable</li>';
    fail(err);
  }
}

// ---------------------------------------------------------------- image and labels

function defaultSavePath(path) {
  const slash = path.lastIndexOf("/");
  const dir = slash >= 0 ? path.slice(0, slash + 1) : "";
  const base = path.slice(slash + 1).replace(/(\.nii\.gz|\.seg\.nrrd|\.nii|\.nrrd|\.mha|\.mhd|\.png|\.jpe?g|\.dcm)$/i, "");
  return `${dir}${base}_seg.nii.gz`;
}

// Images over PREVIEW_OVER voxels first show a block-averaged preview of at most ~PREVIEW_MAX voxels
// (`volume?downsample=K`), then the full volume replaces it when it has loaded (docs/web.md, Speed).
const PREVIEW_OVER = 16e6;
const PREVIEW_MAX = 2e6;
const EDIT_CONTROLS = ["segment", "new-object", "prompt-mode", "undo", "redo", "save", "brush", "fill", "eraser", "interpolate"];

/** The downsampling factor of the first image (1: no preview). */
function previewFactor(shape) {
  const n = shape.reduce((a, b) => a * b, 1);
  if (n <= PREVIEW_OVER) return 1;
  let k = 2;
  while (n / k ** shape.length > PREVIEW_MAX) k += 1;
  return k;
}

function setEditing(on) {
  for (const id of EDIT_CONTROLS) $(id).disabled = !on;
  for (const b of document.querySelectorAll("#prompt-tools button")) b.disabled = !on;
}

async function fetchVolume(info, downsample) {
  const q = downsample > 1 ? `downsample=${downsample}&gz=false` : "gz=false";
  const bytes = await api.bytes(`/api/images/${info.id}/volume?${q}`);
  return NVImage.loadFromUrl({ url: "image.nii", name: `${info.name || "image"}.nii`, buffer: bytes });
}

function showBase(vol) {
  while (nv.volumes.length > 0) nv.removeVolume(nv.volumes[0]);
  nv.addVolume(vol);
  applyWindow($("window-preset").value);
}

/** Load the label overlay only when the label map has labels (an empty one is created on the first prompt). */
async function loadLabelsIfAny() {
  const res = await refreshVolumes();
  if (Object.values(res.volumes_ml || {}).some((v) => v > 0)) await reloadLabels();
  else state.maxLabel = 0;
}

async function openImage(path) {
  setStatus(`opening ${path}…`);
  const t0 = performance.now();
  const info = await api.post("/api/images", { path });
  setReview(null);
  return showSession(info, path, t0);
}

/** Show an open image session (`POST /api/images`, or a review's difference map): the image, then its labels. */
async function showSession(info, path, t0 = performance.now()) {
  const ticket = (state.openTicket = (state.openTicket || 0) + 1);
  state.image = info;
  state.path = path;
  await loadModels(info.id);
  state.labelNames = normaliseNames(info.labels || {});
  state.object = null;
  state.lastPrompt = null;
  if (state.drawing) stopDrawing();
  const k = previewFactor(info.shape);
  if (k > 1) setPromptMode(false);
  setEditing(false);
  state.preview = k > 1 ? k : 0;
  document.body.dataset.fullRes = k > 1 ? "0" : "1";
  document.body.dataset.imageId = info.id;
  document.querySelectorAll("#worklist li").forEach((li) => li.classList.toggle("active", li.dataset.path === path));
  $("image-title").textContent = `${info.name || path} · ${info.shape.join("×")} · ${info.spacing.map((s) => +s.toFixed(3)).join("×")} mm`;
  $("save-path").value = defaultSavePath(path);
  const listed = (state.worklist || []).find((i) => i.path === path); // the worklist's entry (none for a review)
  suggestReview(path, listed);
  $("status-select").value = listed ? listed.status : "new";
  $("status-select").disabled = !!state.review || !listed;
  const finish = async (vol) => {
    if (ticket !== state.openTicket) return; // another image was opened meanwhile
    showBase(vol);
    await loadLabelsIfAny();
    state.preview = 0;
    setEditing(!state.review);
    if (state.review) $("save").disabled = false;
    updateObjectInfo();
    document.body.dataset.fullRes = "1";
    setStatus(`opened ${path} in ${Math.round(performance.now() - t0)} ms${k > 1 ? " (full resolution)" : ""}`);
  };
  if (k === 1) {
    await finish(await fetchVolume(info, 1));
    return info;
  }
  // A large image: the 1/k preview first (view only), then the full volume in the background.
  showBase(await fetchVolume(info, k));
  updateObjectInfo();
  setStatus(`preview at 1/${k} resolution in ${Math.round(performance.now() - t0)} ms; loading full resolution… (editing and prompts wait for it)`);
  await new Promise((resolve) => requestAnimationFrame(resolve)); // let the preview reach the screen first
  state.fullLoad = fetchVolume(info, 1).then(finish).catch((err) => {
    if (ticket === state.openTicket) fail(err);
  });
  return info;
}

function normaliseNames(names) {
  const out = {};
  for (const [k, v] of Object.entries(names)) out[Number(k)] = v;
  return out;
}

function labelColormap(maxLabel) {
  const n = Math.max(1, maxLabel) + 1;
  const cm = { R: [], G: [], B: [], A: [], I: [], labels: [] };
  for (let v = 0; v < n; v++) {
    const [r, g, b] = labelColor(v);
    cm.R.push(r); cm.G.push(g); cm.B.push(b); cm.A.push(v === 0 ? 0 : 255); cm.I.push(v);
    cm.labels.push(v === 0 ? "" : state.labelNames[v] || `label ${v}`);
  }
  return cm;
}

/** Replace the label overlay with the server's current label map. */
async function reloadLabels() {
  const id = state.image.id;
  const bytes = await api.bytes(`/api/images/${id}/labels`);
  const labels = await NVImage.loadFromUrl({ url: "labels.nii.gz", name: "labels.nii.gz", buffer: bytes });
  let maxLabel = 0;
  for (let i = 0; i < labels.img.length; i++) if (labels.img[i] > maxLabel) maxLabel = labels.img[i];
  labels.setColormapLabel(labelColormap(maxLabel));
  labels.opacity = state.drawing ? 0 : Number($("label-opacity").value);
  const old = labelVolume();
  if (old) nv.removeVolume(old);
  nv.addVolume(labels);
  nv.updateGLVolume();
  state.maxLabel = maxLabel;
  return labels;
}

async function refreshVolumes() {
  const res = await api.get(`/api/images/${state.image.id}/volumes`);
  Object.assign(state.labelNames, normaliseNames(res.names || {}));
  renderVolumes(res.volumes_ml || {});
  return res;
}

function renderVolumes(volumes) {
  const tbody = $("volumes").querySelector("tbody");
  tbody.innerHTML = "";
  const values = Object.keys(volumes).map(Number).sort((a, b) => a - b);
  if (values.length === 0) tbody.innerHTML = '<tr><td colspan="3" class="muted">no labels</td></tr>';
  for (const v of values) {
    const tr = document.createElement("tr");
    tr.dataset.label = String(v);
    const [r, g, b] = labelColor(v);
    tr.innerHTML = `<td><span class="swatch" style="background: rgb(${r},${g},${b})"></span>${v}</td><td></td><td>${Number(volumes[v]).toFixed(3)}</td>`;
    tr.children[1].textContent = state.labelNames[v] || "";
    tbody.append(tr);
  }
}

// ---------------------------------------------------------------- view controls

function applyLayout(kind) {
  const st = {
    axial: SLICE_TYPE.AXIAL, coronal: SLICE_TYPE.CORONAL, sagittal: SLICE_TYPE.SAGITTAL,
    render: SLICE_TYPE.RENDER, mpr: SLICE_TYPE.MULTIPLANAR, mpr3d: SLICE_TYPE.MULTIPLANAR,
  }[kind];
  nv.opts.multiplanarShowRender = kind === "mpr" ? SHOW_RENDER.NEVER : SHOW_RENDER.ALWAYS;
  nv.setSliceType(st);
}

function percentile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.round(q * (sorted.length - 1))))];
}

function applyWindow(preset) {
  const vol = baseVolume();
  if (!vol) return;
  if (preset in WINDOWS) {
    const [w, l] = WINDOWS[preset];
    vol.cal_min = l - w / 2;
    vol.cal_max = l + w / 2;
  } else {
    // MR auto: the 2nd..98th percentile of (a sample of) the voxels.
    const img = vol.img;
    const step = Math.max(1, Math.floor(img.length / 200000));
    const sample = [];
    for (let i = 0; i < img.length; i += step) sample.push(img[i] * (vol.hdr.scl_slope || 1) + (vol.hdr.scl_inter || 0));
    sample.sort((a, b) => a - b);
    vol.cal_min = percentile(sample, 0.02);
    vol.cal_max = percentile(sample, 0.98);
    if (vol.cal_max <= vol.cal_min) vol.cal_max = vol.cal_min + 1;
  }
  nv.updateGLVolume();
}

function setLabelOpacity(value) {
  const lab = labelVolume();
  if (lab && !state.drawing) {
    lab.opacity = value;
    nv.updateGLVolume();
  }
}

// ---------------------------------------------------------------- crosshair readout

nv.onLocationChange = (loc) => {
  const vol = baseVolume();
  if (!vol || !state.image) return;
  const vox = Array.from(vol.mm2vox([loc.mm[0], loc.mm[1], loc.mm[2]])).map((v) => Math.round(v));
  const value = vol.getValue(vox[0], vox[1], vox[2]);
  const lab = labelVolume();
  const label = lab ? Math.round(lab.getValue(vox[0], vox[1], vox[2])) : 0;
  const lps = voxelToLps(vox);
  state.location = { voxel: vox, lps, value, label };
  $("ro-vox").textContent = `(${vox.join(", ")})`;
  $("ro-mm").textContent = `(${lps.map((v) => v.toFixed(1)).join(", ")})`;
  $("ro-val").textContent = Number.isFinite(value) ? String(+value.toFixed(3)) : "–";
  $("ro-label").textContent = label ? `${label} ${state.labelNames[label] || ""}` : "0";
};

// ---------------------------------------------------------------- auto segmentation

/** The model select: bundled segmentation models, then model folders found under the served folders. With an
 * open image, the models whose training domain accepts it come first (and are selected); the others say why not. */
async function loadModels(imageId = null) {
  try {
    const models = await api.get(imageId ? `/api/models?image=${encodeURIComponent(imageId)}` : "/api/models");
    const sel = $("model");
    sel.innerHTML = "";
    for (const m of models) {
      const o = document.createElement("option");
      o.value = m.model;
      o.textContent = m.source === "bundled" ? m.name : `${m.model} (folder)`;
      if (m.in_domain === false) {
        o.textContent += " — outside its domain";
        o.title = m.why;
      }
      sel.append(o);
    }
    if (models.length) sel.value = models[0].model;
  } catch (err) {
    fail(err);
  }
}

/** Poll `GET .../progress` while a long task runs: a progress bar and the stage (windows done of all). */
function watchProgress(id) {
  const bar = $("segment-progress");
  const note = $("segment-note");
  bar.hidden = false;
  bar.removeAttribute("value");
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    try {
      const p = await api.get(`/api/images/${id}/progress`);
      if (stopped) return;
      if (p.total > 0) {
        bar.max = p.total;
        bar.value = p.done;
      } else bar.removeAttribute("value");
      const count = p.total > 0 ? ` ${p.done}/${p.total}` : "";
      note.textContent = p.running ? `${p.stage}${count} · ${p.elapsed_s.toFixed(1)} s` : note.textContent;
      state.progressSeen = (state.progressSeen || 0) + 1;
    } catch {
      /* the next tick tries again */
    }
    if (!stopped) state.progressTimer = setTimeout(tick, 250);
  };
  state.progressTimer = setTimeout(tick, 100);
  return () => {
    stopped = true;
    clearTimeout(state.progressTimer);
    bar.hidden = true;
  };
}

async function autoSegment() {
  const model = $("model").value;
  setBusy(true, `segmenting with ${model}…`);
  const stop = watchProgress(state.image.id);
  try {
    const res = await api.post(`/api/images/${state.image.id}/segment`, { model });
    stop();
    $("segment-note").textContent = `${model}: done in ${(res.ms / 1000).toFixed(1)} s`;
    Object.assign(state.labelNames, normaliseNames(res.labels || {}));
    await reloadLabels();
    renderVolumes(res.volumes_ml || {});
    setStatus(`${model}: ${Object.keys(res.labels || {}).length} label(s) in ${Math.round(res.ms)} ms`);
  } finally {
    stop();
    setBusy(false);
  }
}

// ---------------------------------------------------------------- labels: only the changed box after a prompt

const DTYPES = { uint8: Uint8Array, uint16: Uint16Array, uint32: Uint32Array, int16: Int16Array, int32: Int32Array };

/** Write the server's labels of an inclusive box (`GET .../labels/region`: raw values, x fastest) into the label
 * overlay's voxels in place (NiiVue keeps the file's native i, j, k order), then re-upload the textures. */
async function applyLabelRegion(bbox) {
  const q = [...bbox[0], ...bbox[1]].map((v) => Math.round(v)).join(",");
  const { buffer, headers } = await api.raw(`/api/images/${state.image.id}/labels/region?bbox=${q}`);
  const dtype = headers.get("X-Dtype");
  const lab = labelVolume() || (dtype === "uint8" ? emptyLabelOverlay() : null);
  if (!lab || !lab.img) throw new Error("no label overlay to update");
  const Ctor = DTYPES[dtype];
  if (!Ctor || !(lab.img instanceof Ctor)) throw new Error(`region dtype ${dtype} differs from the overlay's`);
  const shape = (headers.get("X-Shape") || "").split(",").map(Number);
  const [sx, sy = 1, sz = 1] = shape;
  const [x0, y0, z0 = 0] = bbox[0].map((v) => Math.max(0, Math.round(v)));
  const dims = lab.hdr.dims;
  const nx = dims[1], ny = dims[2] || 1, nz = dims[3] || 1;
  const vals = new Ctor(buffer);
  if (!shape.every((n) => n > 0) || vals.length !== sx * sy * sz || x0 + sx > nx || y0 + sy > ny || z0 + sz > nz) {
    throw new Error(`region ${q} (shape ${shape}) does not fit the overlay (${nx}×${ny}×${nz})`);
  }
  let top = 0;
  for (let i = 0; i < vals.length; i++) if (vals[i] > top) top = vals[i];
  for (let z = 0; z < sz; z++) {
    for (let y = 0; y < sy; y++) {
      const src = (z * sy + y) * sx;
      lab.img.set(vals.subarray(src, src + sx), ((z0 + z) * ny + (y0 + y)) * nx + x0);
    }
  }
  if (top > (state.maxLabel || 0)) {
    state.maxLabel = top;
    lab.setColormapLabel(labelColormap(top));
  }
  nv.updateGLVolume();
}

/** An all-zero uint8 label overlay on the image's grid (the label map was empty when the image was opened). */
function emptyLabelOverlay() {
  const lab = NVImage.zerosLike(baseVolume(), "uint8");
  lab.name = "labels.nii";
  lab.hdr.scl_slope = 1;
  lab.hdr.scl_inter = 0;
  lab.setColormapLabel(labelColormap(state.maxLabel || 1));
  lab.opacity = state.drawing ? 0 : Number($("label-opacity").value);
  nv.addVolume(lab);
  return lab;
}

/** After a prompt: load only the changed box; the whole label map if that fails. Returns "region" or "reload". */
async function updateLabels(bbox) {
  if (bbox && !state.preview) {
    try {
      await applyLabelRegion(bbox);
      state.labelUpdates.region += 1;
      return "region";
    } catch (err) {
      console.warn("changed-box update failed; reloading the label map:", err);
    }
  }
  await reloadLabels();
  state.labelUpdates.reload += 1;
  return "reload";
}

// ---------------------------------------------------------------- prompt tools: box, scribble, lasso

const TOOL_NOTES = {
  click: "click inside the structure; Shift+click = negative",
  box: "drag a box around the structure on a 2D view",
  scribble: "drag a stroke inside the structure; Shift+drag = negative stroke",
  lasso: "drag a closed outline: on this slice the object is what it encloses (carried to the next slices); Shift+drag removes what it encloses",
};

function setTool(tool) {
  if (!(tool in TOOL_NOTES)) throw new Error(`unknown prompt tool ${tool}`);
  state.promptTool = tool;
  state.stroke = null;
  clearOverlay();
  for (const b of document.querySelectorAll("#prompt-tools button")) b.setAttribute("aria-pressed", String(b.dataset.tool === tool));
  $("tool-note").textContent = TOOL_NOTES[tool];
  if (state.image) setPromptMode(true);
}

/** The two inclusive corners sent for a box drawn from voxel `a` to `b` on a slice across `axis`. In 3D the
 * engine prompts the box's central slice and keeps the result inside the box, so the box gets a depth centred on
 * the drawn slice: as deep (mm) as it is wide, unless "this slice only" (the engine's 3D box convention). */
function boxCorners(a, b, axis) {
  const lo = a.map((v, i) => Math.min(v, b[i]));
  const hi = a.map((v, i) => Math.max(v, b[i]));
  const shape = state.image.shape;
  if (shape.length < 3) return [lo, hi];
  const sliceOnly = $("box-depth").value === "slice" && axis === 2;
  if (!sliceOnly) {
    const sp = state.image.spacing;
    const inPlane = [0, 1, 2].filter((i) => i !== axis);
    const halfMm = inPlane.reduce((s, i) => s + ((hi[i] - lo[i] + 1) * sp[i]) / 2, 0) / inPlane.length;
    const s = a[axis];
    const k = Math.min(Math.round(halfMm / sp[axis]), s, shape[axis] - 1 - s); // symmetric: the drawn slice stays central
    lo[axis] = s - k;
    hi[axis] = s + k;
  }
  return [lo, hi];
}

function overlayContext() {
  const cv = $("overlay");
  const r = window.devicePixelRatio || 1;
  const w = Math.round(cv.clientWidth * r), h = Math.round(cv.clientHeight * r);
  if (cv.width !== w || cv.height !== h) {
    cv.width = w;
    cv.height = h;
  }
  const ctx = cv.getContext("2d");
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, w, h);
  ctx.setTransform(r, 0, 0, r, 0, 0);
  return ctx;
}

function clearOverlay() {
  overlayContext();
}

/** Draw the box / scribble / lasso in progress over NiiVue's canvas (CSS pixels). */
function drawOverlay() {
  const ctx = overlayContext();
  const st = state.stroke;
  if (!st || st.screen.length === 0) return;
  const colour = st.positive ? "rgba(80, 230, 120, 0.95)" : "rgba(255, 90, 90, 0.95)";
  ctx.lineWidth = 2;
  ctx.strokeStyle = st.tool === "box" ? "rgba(60, 220, 255, 0.95)" : colour;
  const p = st.screen;
  if (st.tool === "box") {
    const [a, b] = [p[0], p[p.length - 1]];
    ctx.strokeRect(Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.abs(b[0] - a[0]), Math.abs(b[1] - a[1]));
    return;
  }
  ctx.beginPath();
  ctx.moveTo(p[0][0], p[0][1]);
  for (const q of p.slice(1)) ctx.lineTo(q[0], q[1]);
  if (st.tool === "lasso") {
    ctx.closePath();
    ctx.fillStyle = st.positive ? "rgba(80, 230, 120, 0.15)" : "rgba(255, 90, 90, 0.15)";
    ctx.fill();
  }
  ctx.stroke();
}

function cssPos(pos) {
  return [pos[0] / dpr(), pos[1] / dpr()];
}

function onStrokeStart(ev) {
  if (!state.promptMode || state.promptTool === "click" || ev.button !== 0 || !state.image || state.busy || state.preview) return;
  const pos = canvasPos(ev);
  const tile = tileAt(pos);
  if (!tile) return;
  ev.stopPropagation(); // NiiVue neither moves the crosshair nor drags
  ev.preventDefault();
  const st = { tool: state.promptTool, axCorSag: tile.axCorSag, ltwh: tile.ltwh, positive: !ev.shiftKey };
  st.axis = sliceAxis(tile.axCorSag);
  const vox = strokeVoxel(pos, st);
  if (!vox) return;
  st.slice = vox[st.axis];
  st.voxels = [vox];
  st.screen = [cssPos(clampToTile(pos, tile.ltwh))];
  state.stroke = st;
  drawOverlay();
}

function onStrokeMove(ev) {
  const st = state.stroke;
  if (!st) return;
  ev.stopPropagation();
  ev.preventDefault();
  const pos = canvasPos(ev);
  const vox = strokeVoxel(pos, st);
  if (!vox) return;
  const xy = cssPos(clampToTile(pos, st.ltwh));
  if (st.tool === "box") {
    st.voxels = [st.voxels[0], vox];
    st.screen = [st.screen[0], xy];
  } else {
    const last = st.voxels[st.voxels.length - 1];
    if (vox.some((v, i) => v !== last[i])) st.voxels.push(vox); // one point per voxel crossed (no repeats)
    st.screen.push(xy);
  }
  drawOverlay();
}

function onStrokeEnd(ev) {
  const st = state.stroke;
  if (!st) return;
  ev.stopPropagation();
  ev.preventDefault();
  onStrokeMove(ev);
  state.stroke = null; // the shape stays on the overlay until the prompt returns
  let prompt = null;
  if (st.tool === "box") {
    const [a, b] = [st.voxels[0], st.voxels[st.voxels.length - 1]];
    const flat = [0, 1, 2].filter((i) => i !== st.axis && i < state.image.shape.length).some((i) => a[i] === b[i]);
    if (flat) setStatus("box too small: drag across at least two voxels each way");
    else prompt = ["box", boxCorners(a, b, st.axis), true];
  } else if (st.tool === "scribble") {
    prompt = ["scribble", st.voxels, st.positive];
  } else if (st.voxels.length < 3) {
    setStatus("lasso too small: draw a closed outline");
  } else {
    prompt = ["lasso", st.voxels, st.positive];
  }
  if (!prompt || state.busy) {
    clearOverlay();
    return;
  }
  sendPrompt(...prompt)
    .catch(fail)
    .finally(() => {
      if (!state.stroke) clearOverlay();
    });
}

// ---------------------------------------------------------------- interactive prompts

function updateObjectInfo() {
  const o = state.object;
  const p = state.lastPrompt;
  $("object-info").textContent = o === null ? "no object: press New object (N)" : `object ${o}: ${state.labelNames[o] || "unnamed"}`;
  let what = "";
  if (p) {
    const sign = p.positive ? "+" : "−";
    if (p.type === "click") what = `${sign} click (${p.voxel.join(", ")})`;
    else if (p.type === "box") what = `box (${p.points[0].join(", ")})–(${p.points[1].join(", ")})`;
    else what = `${sign} ${p.type} (${p.points.length} points)`;
  }
  $("latency").textContent = p
    ? `last ${what}: ${p.voxels} voxels, server ${Math.round(p.ms)} ms, round trip ${Math.round(p.roundTripMs)} ms (${p.update === "region" ? "changed box loaded" : "labels reloaded"})`
    : "";
}

async function newObject(name) {
  const res = await api.post(`/api/images/${state.image.id}/objects`, { name: name || `object ${(state.maxLabel || 0) + 1}` });
  state.object = res.object;
  state.labelNames[res.object] = name || state.labelNames[res.object] || `object ${res.object}`;
  setPromptMode(true);
  updateObjectInfo();
  setStatus(`new object ${res.object}: ${TOOL_NOTES[state.promptTool]}`);
  return res.object;
}

function setPromptMode(on) {
  state.promptMode = on;
  if (on && state.drawing) stopDrawing();
  $("prompt-mode").setAttribute("aria-pressed", String(on));
  $("viewer").classList.toggle("prompt", on);
}

/** One prompt (click, box, scribble or lasso) on the current object; then only the changed box of the labels is
 * loaded into the overlay. The round trip is request + server + changed-box transfer (the volumes table after). */
async function sendPrompt(type, points, positive = true) {
  if (state.object === null) await newObject();
  const t0 = performance.now();
  setBusy(true, `${type} prompt…`);
  try {
    const res = await api.post(`/api/images/${state.image.id}/objects/${state.object}/prompts`, { type, points, positive });
    const update = await updateLabels(res.bbox);
    const roundTripMs = performance.now() - t0;
    state.lastPrompt = {
      type, points, positive, voxel: type === "click" ? points[0] : null,
      ms: res.ms, voxels: res.voxels, bbox: res.bbox, update, roundTripMs,
    };
    await refreshVolumes();
    updateObjectInfo();
    setStatus(`${type} prompt done: object has ${res.voxels} voxels`);
    return res;
  } finally {
    setBusy(false);
  }
}

function sendClick(voxel, positive) {
  return sendPrompt("click", [voxel], positive);
}

async function undoRedo(which) {
  setBusy(true, `${which}…`);
  try {
    const res = await api.post(`/api/images/${state.image.id}/${which}`, {});
    const update = res.voxels > 0 ? await updateLabels(res.bbox) : "none";
    await refreshVolumes();
    setStatus(`${which}: ${res.voxels} voxels (${update === "region" ? "changed box loaded" : update === "none" ? "nothing to do" : "labels reloaded"})`);
    return res;
  } finally {
    setBusy(false);
  }
}

async function save() {
  const path = $("save-path").value.trim();
  if (!path) throw new Error("enter a path to save to");
  if (state.drawing) await applyDrawing();
  setBusy(true, `saving ${path}…`);
  try {
    const res = await api.post(`/api/images/${state.image.id}/save`, { path });
    setStatus(`saved ${res.path}`);
    return res;
  } finally {
    setBusy(false);
  }
}

function setBusy(on, text) {
  state.busy = on;
  if (!on) state.opsDone += 1;
  document.body.dataset.busy = on ? "1" : "0";
  if (text) setStatus(text);
}

// ---------------------------------------------------------------- brush / eraser (NiiVue drawing)

function penValue() {
  return state.drawing === "eraser" ? 0 : state.object ?? Math.max(1, state.maxLabel || 1);
}

/** Fill the slices between the first and last drawn slice of the current object (NiiVue's interpolateMaskSlices,
 * guided by the image's intensities) along the axis of `sliceType` (default axial). Only that object is
 * interpolated and only unlabelled voxels are filled: other labels stay exactly as they are. Apply edits sends it. */
function interpolateSlices(sliceType = SLICE_TYPE.AXIAL) {
  if (!state.drawing) startDrawing("brush");
  const value = state.object ?? (state.maxLabel === 1 ? 1 : null);
  if (!value) throw new Error("choose the object to interpolate: New object (N) and draw it on two slices");
  const drawn = nv.drawBitmap;
  const only = new Uint8Array(drawn.length);
  for (let i = 0; i < drawn.length; i++) if (drawn[i] === value) only[i] = value;
  nv.drawBitmap = only;
  try {
    nv.interpolateMaskSlices(undefined, undefined, { sliceType });
  } finally {
    nv.drawBitmap = drawn;
  }
  let added = 0;
  for (let i = 0; i < drawn.length; i++) {
    if (only[i] === value && drawn[i] === 0) {
      drawn[i] = value;
      added += 1;
    }
  }
  nv.refreshDrawing(true);
  setStatus(`interpolated object ${value}: ${added} voxels added; Apply edits to keep them`);
  return added;
}

function startDrawing(kind) {
  setPromptMode(false);
  if (!state.drawing) {
    // The drawing starts from the current label map so that edits refine it.
    const lab = labelVolume();
    if (lab) {
      const copy = lab.clone();
      copy.img = Uint8Array.from(lab.img, (v) => Math.max(0, Math.min(255, Math.round(v))));
      nv.loadDrawing(copy);
      lab.opacity = 0;
    }
    nv.setDrawColormap(labelColormap(Math.max(255, state.maxLabel || 1)));
    nv.drawOpacity = Number($("label-opacity").value) || 0.5;
  }
  state.drawing = kind;
  nv.setDrawingEnabled(true);
  nv.setPenValue(penValue(), kind === "fill");
  for (const k of ["brush", "fill", "eraser"]) $(k).setAttribute("aria-pressed", String(kind === k));
  $("apply-drawing").disabled = false;
  setStatus(kind === "fill" ? "fill: drag a closed outline on a 2D view (its inside is filled), then Apply edits" : `${kind}: drag on a 2D view, then Apply edits`);
}

function stopDrawing() {
  state.drawing = null;
  nv.setDrawingEnabled(false);
  nv.closeDrawing();
  const lab = labelVolume();
  if (lab) lab.opacity = Number($("label-opacity").value);
  nv.updateGLVolume();
  for (const k of ["brush", "fill", "eraser"]) $(k).setAttribute("aria-pressed", "false");
  $("apply-drawing").disabled = true;
}

/** PUT the edited drawing back to the server as NIfTI (written by NiiVue on the image's own grid). */
async function applyDrawing() {
  const bytes = await nv.saveImage({ filename: "", isSaveDrawing: true });
  if (!bytes) throw new Error("no drawing to apply");
  setBusy(true, "applying edits…");
  try {
    const res = await api.put(`/api/images/${state.image.id}/labels`, bytes);
    stopDrawing();
    await reloadLabels();
    await refreshVolumes();
    setStatus("edits applied");
    return res;
  } finally {
    setBusy(false);
  }
}

/** Mark the open image new / in progress / done in the worklist (`POST /api/worklist/status`; who and when are
 * recorded by the server). */
async function setImageStatus(status) {
  if (!state.path || state.review) return null;
  const res = await api.post("/api/worklist/status", { path: state.path, status });
  await loadWorklist();
  document.querySelectorAll("#worklist li").forEach((li) => li.classList.toggle("active", li.dataset.path === state.path));
  setStatus(`${state.path}: ${res.status}${res.by ? ` (${res.by})` : ""}`);
  return res;
}

// ---------------------------------------------------------------- review: prediction vs reference, evaluate

/** Label files the worklist found beside the images (for the review's prediction / reference fields). */
function fillLabelFiles(items) {
  const dl = $("label-files");
  dl.innerHTML = "";
  const seen = new Set();
  for (const item of items) for (const f of item.labels) if (!seen.has(f)) {
    seen.add(f);
    const o = document.createElement("option");
    o.value = f;
    dl.append(o);
  }
  state.worklist = items;
}

/** Default review fields for an opened image (`item`: its worklist entry): its label file as the reference, its
 * save path as the prediction. */
function suggestReview(path, item) {
  if (state.review) return;
  if (item && item.labels.length && !$("review-ref").value) $("review-ref").value = item.labels[0];
  if (!$("review-pred").value) $("review-pred").value = defaultSavePath(path);
}

function setReview(res) {
  state.review = res;
  document.body.classList.toggle("review", !!res);
  $("review-metrics").hidden = !res;
}

function fmt(v, digits) {
  return v === null || v === undefined ? "–" : Number(v).toFixed(digits);
}

/** Open the difference of a prediction and a reference (1 both, 2 prediction only, 3 reference only) over the
 * image, with overlap metrics per label (`POST /api/review`). */
async function review() {
  const prediction = $("review-pred").value.trim();
  const reference = $("review-ref").value.trim();
  if (!prediction || !reference) throw new Error("enter a prediction and a reference label map");
  setBusy(true, `comparing ${prediction} with ${reference}…`);
  try {
    const body = { prediction, reference };
    if (state.path && !state.review) body.image = state.path;
    let res;
    try {
      res = await api.post("/api/review", body);
    } catch (err) {
      if (!body.image || !(err instanceof ApiError) || err.status !== 422) throw err;
      delete body.image; // the open image is on another grid: show the image found beside the labels, or none
      res = await api.post("/api/review", body);
    }
    const info = await api.get(res.urls.info);
    setReview(res);
    const tbody = $("review-metrics").querySelector("tbody");
    tbody.innerHTML = "";
    for (const m of res.metrics) {
      const tr = document.createElement("tr");
      tr.dataset.label = String(m.label);
      tr.innerHTML = `<td></td><td>${fmt(m.dice, 3)}</td><td>${fmt(m.hd95_mm, 2)}</td><td>${fmt(m.volume_prediction_ml, 3)}</td><td>${fmt(m.volume_reference_ml, 3)}</td>`;
      tr.children[0].textContent = `${m.label} ${m.name || ""}`;
      tbody.append(tr);
    }
    await showSession(info, res.image || res.reference);
    $("image-title").textContent = `review: ${res.prediction} vs ${res.reference}${res.image ? ` over ${res.image}` : ""}`;
    const v = res.difference.volumes_ml;
    setStatus(`review: both ${fmt(v[1], 3)} mL · prediction only ${fmt(v[2], 3)} mL · reference only ${fmt(v[3], 3)} mL (${Math.round(res.ms)} ms)`);
    return res;
  } finally {
    setBusy(false);
  }
}

/** Evaluate a folder of predictions against references (`POST /api/evaluate`); the HTML report opens in a
 * sandboxed frame (no scripts). */
async function evaluateFolders() {
  const predictions = $("eval-pred").value.trim();
  const references = $("eval-ref").value.trim();
  const output_dir = $("eval-out").value.trim() || "evaluation";
  if (!predictions || !references) throw new Error("enter the predictions and references folders");
  setBusy(true, `evaluating ${predictions} against ${references}…`);
  try {
    const res = await api.post("/api/evaluate", { predictions, references, output_dir });
    const parts = Object.entries(res.classes || {}).map(([k, c]) => `label ${k}: Dice ${fmt(c.dice?.mean, 3)}`);
    $("eval-summary").textContent = `${res.n_cases} cases · ${parts.join(" · ")} · written to ${res.output_dir}`;
    if (res.report_url) {
      const html = new TextDecoder().decode(await api.bytes(res.report_url));
      $("report-frame").srcdoc = html;
      $("report-title").textContent = res.report;
      $("report-dialog").showModal();
    }
    setStatus(`evaluated ${res.n_cases} cases in ${Math.round(res.ms)} ms`);
    return res;
  } finally {
    setBusy(false);
  }
}

// ---------------------------------------------------------------- wiring

const TOOL_KEYS = { c: "click", b: "box", s: "scribble", l: "lasso" };

function guard(fn) {
  return (...args) => {
    if (state.busy || !state.image || state.preview) return;
    Promise.resolve(fn(...args)).catch(fail);
  };
}

function wire() {
  $("layout").addEventListener("change", (e) => applyLayout(e.target.value));
  $("window-preset").addEventListener("change", (e) => applyWindow(e.target.value));
  $("label-opacity").addEventListener("input", (e) => setLabelOpacity(Number(e.target.value)));
  $("segment").addEventListener("click", guard(autoSegment));
  $("new-object").addEventListener("click", guard(() => newObject()));
  $("prompt-mode").addEventListener("click", () => state.image && !state.preview && setPromptMode(!state.promptMode));
  $("undo").addEventListener("click", guard(() => undoRedo("undo")));
  $("redo").addEventListener("click", guard(() => undoRedo("redo")));
  $("save").addEventListener("click", guard(save));
  $("brush").addEventListener("click", () => state.image && !state.preview && (state.drawing === "brush" ? stopDrawing() : startDrawing("brush")));
  $("eraser").addEventListener("click", () => state.image && !state.preview && (state.drawing === "eraser" ? stopDrawing() : startDrawing("eraser")));
  $("fill").addEventListener("click", () => state.image && !state.preview && (state.drawing === "fill" ? stopDrawing() : startDrawing("fill")));
  $("interpolate").addEventListener("click", guard(() => interpolateSlices()));
  $("review").addEventListener("click", () => !state.busy && review().catch(fail));
  $("status-select").addEventListener("change", (e) => setImageStatus(e.target.value).catch(fail));
  $("evaluate").addEventListener("click", () => !state.busy && evaluateFolders().catch(fail));
  $("apply-drawing").addEventListener("click", guard(applyDrawing));

  // Prompts: in prompt mode with the click tool a left click on a 2D tile is a click prompt at the voxel under the
  // mouse (NiiVue still moves its crosshair there); Shift+click is a negative click.
  nv.canvas.addEventListener(
    "pointerdown",
    (ev) => {
      if (!state.promptMode || state.promptTool !== "click" || ev.button !== 0 || !state.image || state.busy || state.preview) return;
      const vox = voxelAtEvent(ev);
      if (vox) guard(sendClick)(vox, !ev.shiftKey);
    },
    true,
  );
  // Box / scribble / lasso: a drag on a 2D tile, caught before NiiVue's own mouse handlers (capture phase on the
  // canvas's parent), drawn on the overlay canvas while in progress.
  $("stage").addEventListener("mousedown", onStrokeStart, true);
  window.addEventListener("mousemove", onStrokeMove, true);
  window.addEventListener("mouseup", onStrokeEnd, true);
  for (const b of document.querySelectorAll("#prompt-tools button")) b.addEventListener("click", () => setTool(b.dataset.tool));
  window.addEventListener("resize", () => (state.stroke ? drawOverlay() : clearOverlay()));

  document.addEventListener("keydown", (ev) => {
    if (ev.target instanceof HTMLInputElement || ev.target instanceof HTMLSelectElement) return;
    const key = ev.key.toLowerCase();
    if ((ev.ctrlKey || ev.metaKey) && key === "z" && !ev.shiftKey) {
      ev.preventDefault();
      guard(() => undoRedo("undo"))();
    } else if ((ev.ctrlKey || ev.metaKey) && (key === "y" || (key === "z" && ev.shiftKey))) {
      ev.preventDefault();
      guard(() => undoRedo("redo"))();
    } else if (!ev.ctrlKey && !ev.metaKey && !ev.altKey && key === "n") {
      guard(() => newObject())();
    } else if (!ev.ctrlKey && !ev.metaKey && !ev.altKey && key in TOOL_KEYS) {
      setTool(TOOL_KEYS[key]);
    } else if (key === "escape") {
      if (state.stroke) {
        state.stroke = null;
        clearOverlay();
      } else setPromptMode(false);
    }
  });
}

async function main() {
  await nv.attachTo("gl");
  applyLayout($("layout").value);
  wire();
  $("tool-note").textContent = TOOL_NOTES[state.promptTool];
  try {
    const health = await api.get("/api/health");
    setStatus(`medimg ${health.version}`);
  } catch (err) {
    fail(err);
  }
  await loadWorklist();
  await loadModels();
  document.body.dataset.ready = "1";
}

// For scripts and the browser tests: the app's own functions (no second implementation in tests).
window.workbench = {
  nv, state, openImage, newObject, sendClick, sendPrompt, setTool, boxCorners, updateLabels, undoRedo, save,
  reloadLabels, refreshVolumes, autoSegment, review, evaluateFolders, interpolateSlices, setImageStatus,
  moveCrosshairToVoxel, voxelToClient, voxelToLps, setPromptMode, applyWindow, applyLayout,
  startDrawing, stopDrawing, applyDrawing,
};

main().catch(fail);
