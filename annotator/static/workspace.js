/* SonoLabel labelling workspace: a canvas editor for one scene.
 *
 * Every action is saved at once through /api/ (one request per action, sent in order through a
 * single queue so each request carries the row_version the previous answer returned). A 409
 * means someone else saved first: the user is told and the frame's boxes are reloaded from the
 * server, so nothing saved is lost. Undo/redo send the event ids of a change to
 * /api/events/revert; the server restores the recorded state only if the box is unchanged.
 * Brightness, contrast and gamma are applied with a lookup table on an off-screen copy of the
 * frame, only when the frame or the settings change.
 */
(() => {
  "use strict";
  const root = document.getElementById("ws");
  if (!root) return;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const $ = (id) => document.getElementById(id);
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  const stage = $("stage");
  const EDITABLE = ["new", "in_progress", "returned"];
  const EDITORS = ["admin", "annotator"];
  const HANDLE_PX = 7;
  const MIN_BOX = 3;

  const S = {
    scene: null, classes: [], frames: [], boxes: {}, review: { origins: {}, rejected: {} },
    perms: {}, user: null, cur: 0, sel: null, classId: null,
    threshold: 0.5, ghost: false, showModel: false, steer: false, playing: null,
    adj: { brightness: 0, contrast: 1, gamma: 1 },
    view: { scale: 1, ox: 0, oy: 0, fitted: false },
    undo: [], redo: [], images: new Map(), drag: null, hover: null,
    pending: 0, tmp: 0, spaceDown: false, gate: null,
    track: null, trackAccepted: {}, needsLook: {}, lookAgain: {}, corrected: {}, lastChanged: [], offers: [],
  };
  window.sonolabel = S; // for debugging from the console and for end-to-end tests

  // ---------- server ----------
  class ApiError extends Error {
    constructor(status, data) { super((data && data.error) || `HTTP ${status}`); this.status = status; this.data = data; }
  }

  async function api(method, url, body) {
    const resp = await fetch(url, {
      method, credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": csrf },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try { data = await resp.json(); } catch (_) { /* an HTML error page */ }
    if (!resp.ok) throw new ApiError(resp.status, data);
    return data;
  }

  let chain = Promise.resolve();
  /* Run fn after every earlier save; frameId says which frame to reload if it fails. */
  function enqueue(frameId, fn) {
    S.pending++; saveState();
    chain = chain.then(fn).catch((err) => failed(err, frameId)).finally(() => { S.pending--; saveState(); });
    return chain;
  }

  async function failed(err, frameId) {
    if (err instanceof ApiError && err.status === 409) {
      toast(`${err.message} This frame was reloaded with the saved boxes.`, "conflict");
    } else if (err instanceof ApiError) {
      toast(`Not saved: ${err.message}`, "error");
    } else {
      toast(`Not saved (connection problem): ${err.message}. The frame was reloaded.`, "error");
    }
    if (frameId != null) await reloadFrame(frameId);
  }

  function saveState() {
    const el = $("save-state");
    if (S.pending > 0) { el.textContent = "Saving…"; el.className = "save-state busy"; }
    else if (!S.perms.edit) { el.textContent = "View only"; el.className = "save-state muted"; }
    else { el.textContent = "All changes saved"; el.className = "save-state ok"; }
  }

  async function reloadFrame(frameId) {
    try {
      const data = await api("GET", `/api/frames/${frameId}/boxes`);
      const selId = S.sel && S.sel.id;
      S.boxes[frameId] = data.boxes;
      const frame = S.frames.find((f) => f.id === frameId);
      if (frame) frame.reviewed_empty = data.reviewed_empty;
      if (S.sel && S.sel.frame_id === frameId) S.sel = data.boxes.find((b) => b.id === selId) || null;
    } catch (err) {
      toast(`Could not reload the frame: ${err.message}`, "error");
    }
    refresh();
  }

  async function reloadScene() {
    try {
      const data = await api("GET", root.dataset.sceneUrl);
      const selId = S.sel && S.sel.id;
      S.sel = null;
      for (const f of S.frames) {
        S.boxes[f.id] = data.boxes[String(f.id)] || [];
        S.sel = S.sel || S.boxes[f.id].find((b) => b.id === selId) || null;
      }
      for (const f of data.frames) {
        const here = S.frames.find((x) => x.id === f.id);
        if (here) here.reviewed_empty = f.reviewed_empty;
      }
    } catch (err) {
      toast(`Could not reload the scene: ${err.message}`, "error");
    }
    refresh();
  }

  function sceneChanged(scene) {
    if (!scene) return;
    const was = S.scene.status;
    Object.assign(S.scene, scene);
    S.perms.edit = EDITORS.includes(S.user.role) && EDITABLE.includes(S.scene.status) && !assignedElsewhere();
    root.classList.toggle("readonly", !S.perms.edit);
    saveState();
    if (was !== S.scene.status) renderWorkflow();
    renderHead();
  }

  /* ``wholeScene``: the change spans frames (a track operation), so undoing it reloads every frame. */
  function remember(ids, frameId, what, wholeScene = false) {
    if (!ids || !ids.length) return;
    S.undo.push({ ids, frameId, what, wholeScene });
    if (S.undo.length > 200) S.undo.shift();
    S.redo = [];
    renderUndo();
  }

  // ---------- actions ----------
  const frame = () => S.frames[S.cur];
  const frameBoxes = (f = frame()) => (f ? S.boxes[f.id] || (S.boxes[f.id] = []) : []);
  const isModel = (b) => b.source !== "manual";
  const visible = (b) => !isModel(b) || (b.score ?? 0) >= S.threshold;
  const plural = (n, one, many) => `${n} ${n === 1 ? one : (many || `${one}s`)}`;
  /* A frame's state for the review gate (services/review_gate.py): every non-manual box is
   * undecided, whatever the score threshold hides. */
  function coverageOf(f) {
    const boxes = S.boxes[f.id] || [];
    const undecided = boxes.filter(isModel).length, manual = boxes.length - undecided;
    const state = undecided ? "undecided" : manual ? "boxes" : f.reviewed_empty ? "empty" : "missing";
    return { manual, undecided, state };
  }
  const classOf = (id) => S.classes.find((c) => c.id === id) || { name: `class ${id}`, color: "#ffffff" };

  // The server's rule (workflow.check_editable): an assigned scene is its assignee's (admins too).
  const assignedElsewhere = () =>
    !!S.scene.assignee && S.scene.assignee !== S.user.username && S.user.role !== "admin";

  function guardEdit() {
    if (S.perms.edit) return true;
    const why = !EDITORS.includes(S.user.role)
      ? "Your role can view this scene but not change its boxes."
      : !EDITABLE.includes(S.scene.status)
        ? `The scene is ${S.scene.status.replace("_", " ")}; it is locked until a reviewer returns it.`
        : `The scene is assigned to ${S.scene.assignee}; only they (or an admin) change its boxes.`;
    toast(why, "info");
    return false;
  }

  function createBox(rect) {
    const f = frame();
    const joins = S.track != null && !frameBoxes(f).some((b) => b.track_id === S.track && !isModel(b)) ? S.track : null;
    const box = { tmp: ++S.tmp, id: null, frame_id: f.id, class_id: S.classId, ...rect, source: "manual",
                  score: null, model_version: null, author: S.user.username, row_version: 0 };
    frameBoxes(f).push(box);
    f.reviewed_empty = false;
    S.sel = box;
    refresh();
    enqueue(f.id, async () => {
      const body = { class_id: box.class_id, x: box.x, y: box.y, w: box.w, h: box.h };
      // A box drawn while a track is selected, on a frame without a drawn box of it, is that
      // track's keyframe; otherwise it starts a new track.
      if (joins) body.track_id = joins;
      const r = await api("POST", `/api/frames/${f.id}/boxes`, body);
      Object.assign(box, r.box);
      S.track = box.track_id;
      if (joins) S.corrected[joins] = f.id;
      remember(r.undo_ids, f.id, "draw");
      sceneChanged(r.scene);
      refresh();
    });
  }

  function updateBox(box, changes) {
    const f = frame();
    Object.assign(box, changes);
    if (isModel(box)) box.source = "manual"; // the server accepts an edited pre-label
    refresh();
    enqueue(f.id, async () => {
      if (box.id == null) throw new ApiError(409, { error: "The box was not saved." });
      const r = await api("PATCH", `/api/boxes/${box.id}`, { row_version: box.row_version, ...changes });
      Object.assign(box, r.box);
      if (box.track_id != null && ("x" in changes || "w" in changes)) S.corrected[box.track_id] = f.id;
      remember(r.undo_ids, f.id, "edit");
      sceneChanged(r.scene);
      refresh();
    });
  }

  function removeBox(box) {
    const f = frame();
    const list = frameBoxes(f);
    list.splice(list.indexOf(box), 1);
    if (S.sel === box) S.sel = null;
    refresh();
    const verb = isModel(box) ? "reject" : "delete";
    enqueue(f.id, async () => {
      if (box.id == null) throw new ApiError(409, { error: "The box was not saved." });
      const r = verb === "reject"
        ? await api("POST", `/api/boxes/${box.id}/reject`, { row_version: box.row_version })
        : await api("DELETE", `/api/boxes/${box.id}`, { row_version: box.row_version });
      remember(r.undo_ids, f.id, verb);
      sceneChanged(r.scene);
    });
  }

  function acceptBox(box) {
    const f = frame();
    box.source = "manual";
    refresh();
    enqueue(f.id, async () => {
      const r = await api("POST", `/api/boxes/${box.id}/accept`, { row_version: box.row_version });
      Object.assign(box, r.box);
      remember(r.undo_ids, f.id, "accept");
      sceneChanged(r.scene);
      refresh();
    });
  }

  function acceptAll() {
    if (!guardEdit()) return;
    const f = frame();
    const n = frameBoxes(f).filter((b) => isModel(b) && visible(b)).length;
    if (!n) { toast("No pre-label on this frame reaches the threshold.", "info"); return; }
    enqueue(f.id, async () => {
      const r = await api("POST", `/api/frames/${f.id}/accept-above`, { threshold: S.threshold });
      S.boxes[f.id] = r.boxes;
      S.sel = null;
      remember(r.undo_ids, f.id, "accept all");
      sceneChanged(r.scene);
      toast(`Accepted ${plural(r.undo_ids.length, "pre-label")}.`, "info");
      refresh();
    });
  }

  /* Shift+N: reject every pending pre-label of the scene that no track holds, shown or below
   * the threshold. Once the objects are labelled these are the detector's false positives, and
   * the review gate counts each one as undecided. The server takes the count confirmed here
   * and refuses (409) if the scene holds another number by then. */
  function rejectRest() {
    if (!guardEdit()) return;
    const rest = S.frames.flatMap((f) => (S.boxes[f.id] || []).filter((b) => b.source === "model" && b.track_id == null));
    if (!rest.length) { toast("No pending pre-label outside a track in this scene.", "info"); return; }
    const frames = new Set(rest.map((b) => b.frame_id)).size;
    const hidden = rest.filter((b) => !visible(b)).length;
    if (!window.confirm(`Reject ${plural(rest.length, "pending pre-label")} on ${plural(frames, "frame")} that no track holds`
      + (hidden ? ` (${hidden} of them below the score threshold)` : "") + "? One undo brings them back.")) return;
    enqueue(null, async () => {
      try {
        const r = await api("POST", root.dataset.rejectPendingUrl, { count: rest.length });
        tookTracks(r, "reject remaining pre-labels");
        toast(`Rejected ${plural(r.rejected, "pre-label")} on ${plural(r.frames.length, "frame")}.`, "info");
      } catch (err) {
        if (!(err instanceof ApiError && err.status === 409)) throw err;
        toast(err.message, "conflict");
        await reloadScene();
      }
    });
  }
  $("reject-rest").addEventListener("click", rejectRest);

  /* P: the frame's drawn, accepted and propagated boxes carried to the next frame by optical
   * flow (saved as "propagated" pre-labels with a confidence); undo removes them. */
  function propagate() {
    if (!guardEdit()) return;
    const f = frame();
    if (S.cur >= S.frames.length - 1) { toast("This is the scene's last frame.", "info"); return; }
    enqueue(f.id, async () => {
      const r = await api("POST", root.dataset.propagateUrl, { frame_id: f.id, frames: 1 });
      for (const t of r.frames) S.boxes[t.frame_id] = t.boxes;
      if (r.frames.length) remember(r.undo_ids, r.frames[0].frame_id, "propagate");
      sceneChanged(r.scene);
      const carried = r.frames.length ? S.boxes[r.frames[0].frame_id].filter((b) => b.source === "propagated") : [];
      const hidden = carried.filter((b) => !visible(b)).length;
      toast(`Propagated ${plural(r.created, "box", "boxes")} to the next frame.` + (hidden
        ? ` ${plural(hidden, "carried box is", "carried boxes are")} below the score threshold: lower it to see them.`
        : carried.length ? " Y accepts the selected one, Shift+Y all." : ""), "info");
      if (frame() === f) {
        goTo(S.cur + 1);
        // Select the carried box so Y accepts it straight away (Tab moves to the next one).
        S.sel = carried.find(visible) || null;
        refresh();
      } else refresh();
    });
  }

  /* Pre-label: a job runs the active model over the scene; poll it, then reload the boxes. */
  async function prelabel() {
    if (!guardEdit()) return;
    const btn = $("prelabel");
    if (root.dataset.prelabelBlocked) { toast(root.dataset.prelabelBlocked, "info"); return; }
    btn.disabled = true;
    try {
      await chain;
      let job = (await api("POST", root.dataset.jobStartUrl, { kind: "prelabel", params: { scene: S.scene.id } })).job;
      while (!["succeeded", "failed", "cancelled"].includes(job.status)) {
        btn.textContent = `Pre-labelling… ${Math.round(job.progress)}%`;
        await new Promise((ok) => setTimeout(ok, 1000));
        job = (await api("GET", `${root.dataset.jobStatusUrl}?ids=${job.id}`)).jobs[0];
      }
      if (job.status !== "succeeded") throw new Error(job.error || `the job was ${job.status}`);
      const data = await api("GET", root.dataset.sceneUrl);
      for (const fr of S.frames) S.boxes[fr.id] = data.boxes[String(fr.id)] || [];
      S.review = data.review; S.sel = null;
      toast(`Pre-labelled: ${job.result.boxes} box(es) from ${job.result.model_version}.`, "info");
    } catch (err) {
      toast(`Pre-labelling failed: ${err.message}`, "error");
    } finally {
      btn.disabled = !!root.dataset.prelabelBlocked; btn.textContent = "Pre-label scene";
      refresh();
    }
  }

  function noFindings() {
    if (!guardEdit()) return;
    const f = frame();
    const empty = !f.reviewed_empty;
    if (empty && frameBoxes(f).some((b) => !isModel(b))) {
      toast("This frame has boxes; delete them before marking it as having no findings.", "info");
      return;
    }
    enqueue(f.id, async () => {
      const r = await api("POST", `/api/frames/${f.id}/no-findings`, { empty });
      f.reviewed_empty = r.reviewed_empty;
      if (empty) { S.boxes[f.id] = []; S.sel = null; }
      remember(r.undo_ids, f.id, empty ? "no findings" : "clear no findings");
      sceneChanged(r.scene);
      refresh();
    });
  }

  function undoRedo(from, to, label) {
    if (!guardEdit()) return;
    const entry = from.pop();
    if (!entry) { toast(`Nothing to ${label}.`, "info"); return; }
    renderUndo();
    goTo(S.frames.findIndex((f) => f.id === entry.frameId));
    enqueue(entry.frameId, async () => {
      try {
        const r = await api("POST", "/api/events/revert", { event_ids: entry.ids });
        to.push({ ids: r.undo_ids, frameId: entry.frameId, what: entry.what, wholeScene: entry.wholeScene });
        sceneChanged(r.scene);
      } catch (err) {
        if (err instanceof ApiError && err.status === 409) { S.undo = []; S.redo = []; }
        throw err;
      } finally {
        renderUndo();
      }
      await loadTrackState(); // a fuse undone (or a pre-label restored) brings its offer back
      await (entry.wholeScene ? reloadScene() : reloadFrame(entry.frameId));
    });
  }
  const undo = () => undoRedo(S.undo, S.redo, "undo");
  const redo = () => undoRedo(S.redo, S.undo, "redo");

  async function setStatus(status, comment, override) {
    try {
      await chain; // every box save lands before the scene changes hands
      const body = { status, comment: comment || "" };
      if (override !== undefined) body.override = override;
      const r = await api("POST", `/api/scenes/${S.scene.id}/status`, body);
      S.gate = null;
      sceneChanged(r.scene);
      renderWorkflow();
      const said = { submitted: "Submitted for review.", reviewed: "Scene accepted.", returned: "Scene returned to the annotator.", in_progress: "Scene reopened." };
      toast(said[status] || "Saved.", "info");
    } catch (err) {
      if (err instanceof ApiError && err.data && err.data.unfinished_frames) gateRefused(err);
      toast(err.message, err.status === 409 ? "conflict" : "error");
    }
    refresh();
  }

  /* The review gate refused the submission: keep its message in the scene panel and go to
   * the first frame left to do, showing its undecided boxes whatever the threshold. */
  function gateRefused(err) {
    S.gate = { message: err.message, frames: err.data.unfinished_frames };
    const i = S.frames.findIndex((f) => f.id === err.data.first_unfinished_frame_id);
    if (i >= 0) goTo(i);
    if (frameBoxes().some((b) => isModel(b) && !visible(b))) { $("threshold").value = 0; updThr(); }
    renderWorkflow();
  }

  // ---------- navigation ----------
  function goTo(i) {
    if (i < 0 || i >= S.frames.length) return;
    if (S.drag) S.drag = null;
    S.cur = i;
    for (const seen of Object.values(S.lookAgain)) seen.delete(frame().index);
    if (S.sel && S.sel.frame_id !== frame().id) S.sel = null;
    prefetch();
    refresh();
  }

  function togglePlay() {
    if (S.playing) { clearInterval(S.playing); S.playing = null; }
    else {
      if (S.cur >= S.frames.length - 1) goTo(0);
      const fps = Math.min(Math.max(S.scene.fps || 10, 1), 25);
      S.playing = setInterval(() => {
        if (S.cur >= S.frames.length - 1) { togglePlay(); return; }
        goTo(S.cur + 1);
      }, 1000 / fps);
    }
    $("play").textContent = S.playing ? "❚❚" : "▶";
  }

  // ---------- images ----------
  function image(f) {
    let entry = S.images.get(f.id);
    if (!entry) {
      const img = new Image();
      entry = { img, ok: false, adjusted: null, key: "" };
      img.onload = () => { entry.ok = true; if (frame() && frame().id === f.id) draw(); };
      img.onerror = () => { entry.failed = true; if (frame() && frame().id === f.id) draw(); };
      img.src = f.image_url;
      S.images.set(f.id, entry);
    }
    return entry;
  }

  function prefetch() {
    for (let d = -1; d <= 6; d++) { const f = S.frames[S.cur + d]; if (f) image(f); }
  }

  function adjusted(entry) {
    const a = S.adj;
    const key = `${a.brightness}|${a.contrast}|${a.gamma}`;
    if (key === "0|1|1") return entry.img;
    if (entry.adjusted && entry.key === key) return entry.adjusted;
    const { naturalWidth: w, naturalHeight: h } = entry.img;
    const off = entry.adjusted || document.createElement("canvas");
    off.width = w; off.height = h;
    const octx = off.getContext("2d", { willReadFrequently: true });
    octx.drawImage(entry.img, 0, 0);
    const data = octx.getImageData(0, 0, w, h);
    const lut = new Uint8ClampedArray(256);
    for (let v = 0; v < 256; v++) {
      const g = 255 * Math.pow(v / 255, 1 / a.gamma);
      lut[v] = (g - 128) * a.contrast + 128 + a.brightness * 1.28;
    }
    const px = data.data;
    for (let i = 0; i < px.length; i += 4) { px[i] = lut[px[i]]; px[i + 1] = lut[px[i + 1]]; px[i + 2] = lut[px[i + 2]]; }
    octx.putImageData(data, 0, 0);
    entry.adjusted = off; entry.key = key;
    return off;
  }

  // ---------- view ----------
  function resize() {
    const r = stage.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.max(1, Math.round(r.width * dpr));
    canvas.height = Math.max(1, Math.round(r.height * dpr));
    canvas.style.width = `${r.width}px`; canvas.style.height = `${r.height}px`;
    if (!S.view.fitted) fit(); else draw();
  }

  function fit() {
    const f = frame();
    if (!f) return;
    const r = stage.getBoundingClientRect();
    const pad = 24;
    const scale = Math.min((r.width - 2 * pad) / f.width, (r.height - 2 * pad) / f.height);
    S.view.scale = Math.max(scale, 0.05);
    S.view.ox = (r.width - f.width * S.view.scale) / 2;
    S.view.oy = (r.height - f.height * S.view.scale) / 2;
    S.view.fitted = true;
    draw();
  }

  function zoomAt(sx, sy, factor) {
    const v = S.view;
    const scale = Math.min(Math.max(v.scale * factor, 0.05), 40);
    v.ox = sx - (sx - v.ox) * (scale / v.scale);
    v.oy = sy - (sy - v.oy) * (scale / v.scale);
    v.scale = scale;
    draw();
  }

  function toFrame(e) {
    const r = canvas.getBoundingClientRect();
    const sx = e.clientX - r.left, sy = e.clientY - r.top;
    return { sx, sy, x: (sx - S.view.ox) / S.view.scale, y: (sy - S.view.oy) / S.view.scale };
  }

  // ---------- tracks ----------
  /* A track is one object across the scene (Box.track_id). Its frames, drawn boxes (keyframes)
   * and pending suggestions are read from the boxes held here; the frames accepted as a track
   * come from the server (S.trackAccepted), "needs a look" from the last propagate-track answer. */
  function tracksHere() {
    const out = new Map();
    S.frames.forEach((f, i) => {
      for (const b of S.boxes[f.id] || []) {
        if (b.track_id == null) continue;
        if (!out.has(b.track_id)) out.set(b.track_id, { id: b.track_id, classes: new Set(), at: new Map(), key: new Set(), pending: new Set() });
        const t = out.get(b.track_id);
        t.classes.add(b.class_id); t.at.set(i, b);
        (isModel(b) ? t.pending : t.key).add(i);
      }
    });
    return [...out.values()].sort((a, b) => a.id - b.id);
  }

  const trackAcceptedAt = (t, i) => t.key.has(i) && (S.trackAccepted[t.id] || []).includes(S.frames[i].index);

  async function loadTrackState() {
    try {
      const data = await api("GET", root.dataset.tracksUrl);
      S.trackAccepted = {};
      for (const t of data.tracks) S.trackAccepted[t.track_id] = t.accepted;
      S.offers = data.offers;
    } catch (err) { toast(`Could not load the tracks: ${err.message}`, "error"); }
  }

  function selectTrack(id) {
    S.track = S.track === id ? null : id;
    S.sel = null;
    refresh();
  }

  function needTrack() {
    if (S.track == null) { toast("Select a track first: click it in the track list, or click one of its boxes.", "info"); return false; }
    return guardEdit();
  }

  /* The answer of a track operation: the scene's boxes and tracks as saved. */
  function tookTracks(r, what) {
    for (const f of S.frames) S.boxes[f.id] = r.scene_boxes[String(f.id)] || [];
    S.trackAccepted = {};
    for (const t of r.tracks) S.trackAccepted[t.track_id] = t.accepted;
    S.offers = r.offers;
    S.sel = null;
    remember(r.undo_ids, frame().id, what, true);
    sceneChanged(r.scene);
    refresh();
  }

  function trackOp(op, body, what, done) {
    if (!needTrack()) return;
    const f = frame();
    enqueue(f.id, async () => {
      const r = await api("POST", `${root.dataset.tracksUrl}/${op}`, { track_id: S.track, ...body });
      tookTracks(r, what);
      if (done) done(r);
    });
  }

  /* Fused-box offers (services/track_fuse.py): where a track's propagated box and a pending
   * pre-label of its class overlap, the detector's edges with the track's identity. The server
   * computes them; an offer whose boxes changed here since (accepted, rejected, moved) is
   * dropped until the server says otherwise. */
  function offersHere(f = frame()) {
    if (!f) return [];
    const boxes = S.boxes[f.id] || [];
    const has = (id, source) => boxes.some((b) => b.id === id && b.source === source);
    return S.offers.filter((o) => o.frame_id === f.id && has(o.box_id, "propagated") && has(o.prelabel_id, "model"));
  }

  /* The offer U takes: the selected box's or track's on this frame, else the only one. */
  function chosenOffer() {
    const here = offersHere();
    const sel = S.sel && S.sel.frame_id === frame().id ? S.sel : null;
    return here.find((o) => sel && (o.box_id === sel.id || o.prelabel_id === sel.id))
      || here.find((o) => o.track_id === S.track) || (here.length === 1 ? here[0] : null);
  }

  function fuse(offer) {
    if (!guardEdit()) return;
    offer = offer || chosenOffer();
    if (!offer) {
      toast(offersHere().length ? "Several fuse offers here: select the track (or one of its boxes) first."
        : "No fuse offer on this frame: it needs a propagated box and an overlapping pre-label of its class.", "info");
      return;
    }
    const f = frame();
    enqueue(f.id, async () => {
      const r = await api("POST", `${root.dataset.tracksUrl}/fuse`, { box_id: offer.box_id, prelabel_id: offer.prelabel_id });
      tookTracks(r, "fuse");
      S.track = offer.track_id;
      S.sel = (S.boxes[f.id] || []).find((b) => b.id === offer.prelabel_id) || null;
      toast(`Fused: track ${offer.track_id} takes the detector's box on frame ${f.index}.`, "info");
      refresh();
    });
  }

  function renderOffers() {
    const here = offersHere();
    $("fuse-offers").hidden = !here.length;
    const list = $("fuse-list");
    list.innerHTML = "";
    for (const o of here) {
      const c = classOf(o.class_id);
      const li = document.createElement("li");
      li.dataset.prelabelId = o.prelabel_id;
      li.innerHTML = `<span class="swatch"></span><div><div class="name"></div><div class="meta"></div></div><button type="button" class="secondary fuse-btn" title="U">Fuse</button>`;
      li.querySelector(".swatch").style.borderColor = c.color;
      li.querySelector(".name").textContent = `Fuse into track ${o.track_id}`;
      li.querySelector(".meta").textContent = `${c.name} pre-label #${o.prelabel_id} (${(o.score ?? 0).toFixed(2)}) replaces propagated box #${o.box_id}`;
      const btn = li.querySelector("button");
      btn.disabled = !S.perms.edit;
      btn.addEventListener("click", (e) => { e.stopPropagation(); fuse(o); });
      li.addEventListener("click", () => { S.track = o.track_id; S.sel = null; refresh(); });
      list.appendChild(li);
    }
  }

  /* T: propagate the selected track from its drawn boxes; after a correction only the spans
   * that frame bounds are recomputed. Only the frames whose box changed are reloaded. With a
   * pending pre-label without a track selected, T starts a track from it: the pre-label stays
   * pending (Shift+T accepts it with the track) and is the track's keyframe. */
  function propagateTrack() {
    const f = frame();
    const seed = S.sel && S.sel.frame_id === f.id && S.sel.source === "model" && S.sel.track_id == null ? S.sel : null;
    if (seed ? !guardEdit() : !needTrack()) return;
    let id = seed ? null : S.track;
    const corrected = seed ? null : S.corrected[id];
    enqueue(f.id, async () => {
      const body = seed ? { box_id: seed.id } : { track_id: id };
      if (corrected != null) body.frame_id = corrected;
      // "Pre-labels steer tracks": those shown at the slider steer it (services/track_fuse.py)
      if (S.steer) body.threshold = S.threshold;
      const r = await api("POST", root.dataset.propagateTrackUrl, body);
      id = r.track_id;
      delete S.corrected[id];
      for (const t of r.frames) S.boxes[t.frame_id] = t.boxes;
      const changedIds = new Set(S.frames.filter((x) => r.changed_frames.includes(x.index)).map((x) => x.id));
      for (const fid of changedIds) if (!r.frames.some((t) => t.frame_id === fid)) S.boxes[fid] = [];
      S.needsLook[id] = r.needs_look;
      // Frames whose box moved visibly since it was last seen: marked on the lane until visited.
      S.lookAgain[id] = new Set(r.look_again.filter((i) => i !== f.index));
      S.lastChanged = r.changed_frames;
      S.offers = S.offers.filter((o) => o.track_id !== id).concat(r.fused);
      if (r.started_from != null) {
        S.track = id;
        S.sel = (S.boxes[f.id] || []).find((b) => b.id === r.started_from) || null;
      }
      if (S.sel && !(S.boxes[S.sel.frame_id] || []).includes(S.sel)) S.sel = null;
      remember(r.undo, f.id, r.started_from != null ? "start track" : "propagate track", true);
      sceneChanged(r.scene);
      toast((r.started_from != null ? `Track ${id} started from pre-label #${r.started_from} (still pending: Shift+T accepts it with the track). ` : "") +
        `Track ${id}: ${plural(r.changed_frames.length, "frame")} changed` +
        (r.needs_look.length ? `; frame ${r.needs_look.join(", ")} needs a look (the object may have left the plane).` : ".") +
        (r.fused.length ? ` The detector also found it on ${plural(r.fused.length, "frame")}: U fuses its edges into the track.` : ""), "info");
      refresh();
    });
  }

  function renderTracks() {
    const list = $("track-list");
    const tracks = tracksHere();
    if (S.track != null && !tracks.some((t) => t.id === S.track)) S.track = null;
    list.innerHTML = "";
    if (!tracks.length) {
      const li = document.createElement("li"); li.className = "muted";
      li.textContent = "None yet: every box you draw starts one.";
      list.appendChild(li);
    }
    for (const t of tracks) {
      const c = classOf([...t.classes][0]);
      const frames = [...t.at.keys()];
      const accepted = frames.filter((i) => trackAcceptedAt(t, i)).length;
      const fusable = frames.filter((i) => offersHere(S.frames[i]).some((o) => o.track_id === t.id)).length;
      const li = document.createElement("li");
      li.className = t.id === S.track ? "sel" : "";
      li.dataset.trackId = t.id;
      li.innerHTML = `<span class="swatch"></span><div><div class="name"></div><div class="meta"></div></div>`;
      li.querySelector(".swatch").style.background = c.color;
      li.querySelector(".name").textContent = `Track ${t.id} · ${t.classes.size > 1 ? "mixed classes" : c.name}`;
      li.querySelector(".meta").textContent =
        `frames ${S.frames[frames[0]].index}–${S.frames[frames[frames.length - 1]].index} (${frames.length}) · ` +
        `${plural(t.key.size - accepted, "keyframe")} · ` +
        (t.pending.size ? `${t.pending.size} suggestions pending` : "accepted") +
        (fusable ? ` · ${plural(fusable, "fuse offer")}` : "");
      li.addEventListener("click", () => selectTrack(t.id));
      list.appendChild(li);
    }
    const tools = $("track-tools");
    tools.hidden = S.track == null || !S.perms.edit;
    const cls = $("track-class"), merge = $("track-merge");
    const sel = tracks.find((t) => t.id === S.track);
    if (sel) {
      cls.innerHTML = "";
      for (const c of S.classes) cls.add(new Option(c.name, c.id, false, sel.classes.size === 1 && sel.classes.has(c.id)));
      merge.innerHTML = "";
      merge.add(new Option("— another track —", ""));
      for (const t of tracks) if (t.id !== sel.id) merge.add(new Option(`Track ${t.id}`, t.id));
    }
    renderLanes(tracks);
  }

  function renderLanes(tracks) {
    const el = $("lanes");
    el.innerHTML = "";
    for (const t of tracks) {
      const lane = document.createElement("div");
      lane.className = `lane${t.id === S.track ? " sel" : ""}`;
      lane.dataset.trackId = t.id;
      lane.style.borderLeft = `3px solid ${classOf([...t.classes][0]).color}`;
      const look = S.needsLook[t.id] || [];
      const again = S.lookAgain[t.id] || new Set();
      S.frames.forEach((f, i) => {
        const c = document.createElement("span");
        const fusable = t.at.has(i) && offersHere(f).some((o) => o.track_id === t.id);
        const state = look.includes(f.index) ? "look" : trackAcceptedAt(t, i) ? "acc" : t.key.has(i) ? "key"
          : again.has(f.index) ? "again" : fusable ? "fuse" : t.at.has(i) ? "has" : "";
        c.className = `${state}${i === S.cur ? " cur" : ""}`;
        c.title = `Track ${t.id}, frame ${f.index}: ${{ look: "needs a look", acc: "accepted", key: "keyframe (drawn)",
          again: "propagated suggestion that moved since you saw it: look again",
          fuse: "propagated suggestion, the detector's box offered (U fuses)", has: "propagated suggestion", "": "no box" }[state]}`;
        c.addEventListener("click", () => { S.track = t.id; S.sel = null; goTo(i); });
        lane.appendChild(c);
      });
      el.appendChild(lane);
    }
  }

  $("track-propagate").addEventListener("click", propagateTrack);
  /* Shift+T: accept the track on every frame; the server also retires the pending pre-labels
   * (no track, the track's class) that overlap its boxes, the detector's duplicates of it. */
  function acceptTrack() {
    trackOp("accept", {}, "accept track", (r) => {
      toast(`Track accepted${r.retired ? `; ${plural(r.retired, "overlapping pre-label")} retired (the same object)` : ""}.`, "info");
    });
  }

  $("track-accept").addEventListener("click", acceptTrack);
  $("track-accept-here").addEventListener("click", () =>
    trackOp("accept", { from_frame: S.frames[0].index, to_frame: frame().index }, "accept track span"));
  $("track-split").addEventListener("click", () =>
    trackOp("split", { frame_index: frame().index }, "split track", (r) => { toast(`Frames from ${frame().index} on are now track ${r.new_track_id}.`, "info"); }));
  $("track-class").addEventListener("change", (e) => trackOp("class", { class_id: Number(e.target.value) }, "track class"));
  $("track-merge-go").addEventListener("click", () => {
    const other = Number($("track-merge").value);
    if (!other) { toast("Choose the track to merge into the selected one.", "info"); return; }
    trackOp("merge", { other }, "merge tracks");
  });

  // ---------- drawing ----------
  function draw() {
    const f = frame();
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#050607";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    if (!f) return;
    const v = S.view;
    ctx.setTransform(dpr * v.scale, 0, 0, dpr * v.scale, dpr * v.ox, dpr * v.oy);
    const entry = image(f);
    ctx.imageSmoothingEnabled = v.scale < 2;
    if (entry.ok) ctx.drawImage(adjusted(entry), 0, 0, f.width, f.height);
    else {
      ctx.fillStyle = "#15181c"; ctx.fillRect(0, 0, f.width, f.height);
      label(entry.failed ? "image missing" : "loading…", f.width / 2 - 30 / v.scale, f.height / 2, "#8d97a5", null);
    }
    ctx.strokeStyle = "#2c333d"; ctx.lineWidth = 1 / v.scale; ctx.setLineDash([]);
    ctx.strokeRect(0, 0, f.width, f.height);

    if (S.ghost && S.cur > 0) {
      for (const b of frameBoxes(S.frames[S.cur - 1]).filter(visible)) drawGhost(b);
    }
    if (S.showModel) drawModelOriginals(f);
    const boxes = frameBoxes(f).filter(visible);
    for (const b of boxes) if (b !== S.sel) drawBox(b, false);
    if (S.sel && boxes.includes(S.sel)) drawBox(S.sel, true);
    for (const o of offersHere(f)) drawOffer(o);
    const d = S.drag;
    if (d && d.mode === "draw" && d.rect) {
      const c = classOf(S.classId).color;
      ctx.setLineDash([]); ctx.lineWidth = 2 / v.scale; ctx.strokeStyle = c;
      ctx.strokeRect(d.rect.x, d.rect.y, d.rect.w, d.rect.h);
    }
    renderOverlay();
  }

  function hexA(hex, a) {
    const n = parseInt(hex.slice(1), 16);
    return `rgba(${n >> 16 & 255},${n >> 8 & 255},${n & 255},${a})`;
  }

  function label(text, x, y, color, bg) {
    const s = S.view.scale;
    ctx.font = `600 ${12 / s}px system-ui, sans-serif`;
    const w = ctx.measureText(text).width + 8 / s, h = 16 / s;
    if (bg) { ctx.fillStyle = bg; ctx.fillRect(x, y - h, w, h); }
    ctx.fillStyle = color; ctx.fillText(text, x + 4 / s, y - 4 / s);
  }

  function drawBox(b, selected) {
    const s = S.view.scale;
    const c = classOf(b.class_id);
    const model = isModel(b);
    ctx.lineWidth = (selected ? 2.5 : 2) / s;
    ctx.setLineDash(model ? [7 / s, 5 / s] : []);
    ctx.strokeStyle = c.color;
    ctx.fillStyle = hexA(c.color, selected ? 0.16 : 0.06);
    ctx.fillRect(b.x, b.y, b.w, b.h);
    // A dark under-stroke keeps thin outlines readable on bright tissue.
    ctx.save(); ctx.strokeStyle = "rgba(0,0,0,.55)"; ctx.lineWidth = ctx.lineWidth + 2 / s;
    ctx.strokeRect(b.x, b.y, b.w, b.h); ctx.restore();
    ctx.strokeRect(b.x, b.y, b.w, b.h);
    if (S.track != null && b.track_id === S.track) {
      // The selected track, on whatever frame: a white halo outside the box.
      ctx.save(); ctx.setLineDash([]); ctx.strokeStyle = "rgba(255,255,255,.85)"; ctx.lineWidth = 1.5 / s;
      ctx.strokeRect(b.x - 3 / s, b.y - 3 / s, b.w + 6 / s, b.h + 6 / s); ctx.restore();
    }
    ctx.setLineDash([]);
    const tag = b.track_id != null ? ` · T${b.track_id}` : "";
    const text = (model ? `${c.name} ${(b.score ?? 0).toFixed(2)}` : c.name) + tag;
    const ty = b.y > 18 / s ? b.y : b.y + b.h + 16 / s;
    label(text, b.x, ty, model ? c.color : "#06121a", model ? "rgba(5,6,7,.8)" : c.color);
    if (selected && S.perms.edit) {
      ctx.fillStyle = "#ffffff"; ctx.strokeStyle = "#06121a"; ctx.lineWidth = 1 / s;
      for (const [hx, hy] of handlePoints(b)) {
        const r = HANDLE_PX / 2 / s;
        ctx.fillRect(hx - r, hy - r, 2 * r, 2 * r); ctx.strokeRect(hx - r, hy - r, 2 * r, 2 * r);
      }
    }
  }

  /* A fuse offer: the pre-label's edges in short white dashes just outside it, tagged with
   * the track it would join and the key that fuses it. */
  function drawOffer(o) {
    const s = S.view.scale;
    const g = 2.5 / s;
    ctx.save();
    ctx.setLineDash([3 / s, 3 / s]);
    ctx.strokeStyle = "rgba(0,0,0,.6)"; ctx.lineWidth = 3.5 / s;
    ctx.strokeRect(o.x - g, o.y - g, o.w + 2 * g, o.h + 2 * g);
    ctx.strokeStyle = "#ffffff"; ctx.lineWidth = 1.5 / s;
    ctx.strokeRect(o.x - g, o.y - g, o.w + 2 * g, o.h + 2 * g);
    ctx.restore();
    label(`fuse → T${o.track_id} · U`, o.x, o.y + o.h + 18 / s, "#06121a", "#ffffff");
  }

  /* The previous frame's box: its class colour, long dashes over a dark under-stroke (thin
   * dots vanished on speckle) and a small label below it, so it is not taken for a box here. */
  function drawGhost(b) {
    const s = S.view.scale;
    const c = classOf(b.class_id);
    ctx.setLineDash([8 / s, 5 / s]);
    ctx.save(); ctx.strokeStyle = "rgba(0,0,0,.5)"; ctx.lineWidth = 4.5 / s;
    ctx.strokeRect(b.x, b.y, b.w, b.h); ctx.restore();
    ctx.lineWidth = 2.5 / s;
    ctx.strokeStyle = hexA(c.color, 0.9);
    ctx.strokeRect(b.x, b.y, b.w, b.h);
    ctx.setLineDash([]);
    label(`previous · ${c.name}`, b.x, b.y + b.h + 16 / s, c.color, "rgba(5,6,7,.7)");
  }

  function drawModelOriginals(f) {
    const s = S.view.scale;
    ctx.lineWidth = 1.5 / s;
    ctx.setLineDash([2 / s, 4 / s]);
    ctx.strokeStyle = "rgba(255,214,102,.8)";
    for (const b of frameBoxes(f)) {
      const o = S.review.origins[b.id];
      if (o && o.kind === "edited" && o.model_box) {
        const m = o.model_box; ctx.strokeRect(m.x, m.y, m.w, m.h);
      }
    }
    for (const m of S.review.rejected[f.id] || []) {
      ctx.strokeStyle = "rgba(200,200,200,.6)"; ctx.strokeRect(m.x, m.y, m.w, m.h);
      ctx.beginPath(); ctx.moveTo(m.x, m.y); ctx.lineTo(m.x + m.w, m.y + m.h);
      ctx.moveTo(m.x + m.w, m.y); ctx.lineTo(m.x, m.y + m.h); ctx.stroke();
      label(`rejected ${(m.score ?? 0).toFixed(2)}`, m.x, m.y, "#c8c8c8", "rgba(5,6,7,.7)");
    }
    ctx.setLineDash([]);
  }

  function handlePoints(b) {
    const { x, y, w, h } = b;
    return [[x, y], [x + w / 2, y], [x + w, y], [x + w, y + h / 2], [x + w, y + h], [x + w / 2, y + h], [x, y + h], [x, y + h / 2]];
  }
  const HANDLE_SIDES = ["nw", "n", "ne", "e", "se", "s", "sw", "w"];

  function hitHandle(b, p) {
    const tol = HANDLE_PX / S.view.scale;
    const pts = handlePoints(b);
    for (let i = 0; i < pts.length; i++) if (Math.abs(pts[i][0] - p.x) <= tol && Math.abs(pts[i][1] - p.y) <= tol) return HANDLE_SIDES[i];
    return null;
  }

  function hitBox(p) {
    const tol = 3 / S.view.scale;
    const hits = frameBoxes().filter(visible).filter((b) => p.x >= b.x - tol && p.x <= b.x + b.w + tol && p.y >= b.y - tol && p.y <= b.y + b.h + tol);
    hits.sort((a, b) => a.w * a.h - b.w * b.h); // the smallest of nested boxes is the one aimed at
    return hits[0] || null;
  }

  // ---------- mouse ----------
  const clampRect = (r, f) => {
    const x = Math.max(0, Math.min(r.x, f.width)), y = Math.max(0, Math.min(r.y, f.height));
    return { x, y, w: Math.max(0, Math.min(r.x + r.w, f.width) - x), h: Math.max(0, Math.min(r.y + r.h, f.height) - y) };
  };
  const round = (r) => ({ x: Math.round(r.x * 10) / 10, y: Math.round(r.y * 10) / 10, w: Math.round(r.w * 10) / 10, h: Math.round(r.h * 10) / 10 });

  canvas.addEventListener("contextmenu", (e) => e.preventDefault());
  canvas.addEventListener("mousedown", (e) => {
    canvas.focus();
    const p = toFrame(e);
    if (e.button === 2 || e.button === 1 || S.spaceDown) {
      S.drag = { mode: "pan", sx: p.sx, sy: p.sy, ox: S.view.ox, oy: S.view.oy };
      return;
    }
    if (e.button !== 0) return;
    const f = frame();
    if (!f) return;
    const handle = S.sel && S.perms.edit ? hitHandle(S.sel, p) : null;
    if (handle) { S.drag = { mode: "resize", handle, box: S.sel, orig: { ...pick(S.sel) }, p }; return; }
    const hit = hitBox(p);
    if (hit) {
      S.sel = hit;
      if (S.perms.edit) S.drag = { mode: "move", box: hit, orig: { ...pick(hit) }, p };
      refresh();
      return;
    }
    S.sel = null;
    if (S.perms.edit) {
      const x = Math.max(0, Math.min(p.x, f.width)), y = Math.max(0, Math.min(p.y, f.height));
      S.drag = { mode: "draw", p: { x, y }, rect: null };
    } else {
      S.drag = { mode: "pan", sx: p.sx, sy: p.sy, ox: S.view.ox, oy: S.view.oy };
    }
    refresh();
  });

  const pick = (b) => ({ x: b.x, y: b.y, w: b.w, h: b.h });

  window.addEventListener("mousemove", (e) => {
    const d = S.drag;
    const p = toFrame(e);
    if (!d) { hoverCursor(p); return; }
    const f = frame();
    if (d.mode === "pan") {
      S.view.ox = d.ox + (p.sx - d.sx); S.view.oy = d.oy + (p.sy - d.sy); draw(); return;
    }
    if (d.mode === "draw") {
      d.rect = clampRect({ x: Math.min(d.p.x, p.x), y: Math.min(d.p.y, p.y), w: Math.abs(p.x - d.p.x), h: Math.abs(p.y - d.p.y) }, f);
    } else if (d.mode === "move") {
      const o = d.orig;
      const nx = Math.max(0, Math.min(o.x + p.x - d.p.x, f.width - o.w));
      const ny = Math.max(0, Math.min(o.y + p.y - d.p.y, f.height - o.h));
      Object.assign(d.box, { x: nx, y: ny });
      d.moved = true;
    } else if (d.mode === "resize") {
      const o = d.orig;
      let x0 = o.x, y0 = o.y, x1 = o.x + o.w, y1 = o.y + o.h;
      const px = Math.max(0, Math.min(p.x, f.width)), py = Math.max(0, Math.min(p.y, f.height));
      if (d.handle.includes("w")) x0 = px;
      if (d.handle.includes("e")) x1 = px;
      if (d.handle.includes("n")) y0 = py;
      if (d.handle.includes("s")) y1 = py;
      Object.assign(d.box, { x: Math.min(x0, x1), y: Math.min(y0, y1), w: Math.abs(x1 - x0), h: Math.abs(y1 - y0) });
      d.moved = true;
    }
    draw();
  });

  window.addEventListener("mouseup", () => {
    const d = S.drag;
    S.drag = null;
    if (!d) return;
    if (d.mode === "draw") {
      if (d.rect && d.rect.w >= MIN_BOX && d.rect.h >= MIN_BOX) createBox(round(d.rect));
      else refresh();
    } else if ((d.mode === "move" || d.mode === "resize") && d.moved) {
      if (d.box.w < MIN_BOX || d.box.h < MIN_BOX) { Object.assign(d.box, d.orig); refresh(); return; }
      const r = round(pick(d.box));
      Object.assign(d.box, d.orig); // updateBox applies the change and records it
      updateBox(d.box, r);
    }
  });

  function hoverCursor(p) {
    if (!frame()) return;
    let cursor = S.perms.edit ? "crosshair" : "grab";
    const handle = S.sel && S.perms.edit ? hitHandle(S.sel, p) : null;
    if (handle) cursor = { n: "ns-resize", s: "ns-resize", e: "ew-resize", w: "ew-resize", ne: "nesw-resize", sw: "nesw-resize", nw: "nwse-resize", se: "nwse-resize" }[handle];
    else if (hitBox(p)) cursor = S.perms.edit ? "move" : "pointer";
    if (S.spaceDown) cursor = "grab";
    canvas.style.cursor = cursor;
  }

  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const p = toFrame(e);
    zoomAt(p.sx, p.sy, Math.pow(1.0015, -e.deltaY));
  }, { passive: false });

  // ---------- keyboard ----------
  window.addEventListener("keydown", (e) => {
    const t = e.target;
    if (t && (t.tagName === "TEXTAREA" || (t.tagName === "INPUT" && t.type !== "range" && t.type !== "checkbox") || t.tagName === "SELECT")) return;
    if (t && t.tagName === "INPUT") t.blur();
    const k = e.key;
    const ctrl = e.ctrlKey || e.metaKey;
    if (ctrl && (k === "z" || k === "Z")) { e.preventDefault(); if (e.shiftKey) redo(); else undo(); return; }
    if (ctrl && (k === "y" || k === "Y")) { e.preventDefault(); redo(); return; }
    if (ctrl || e.altKey) return;
    if (!frame()) return;
    const sel = S.sel && S.sel.frame_id === frame().id ? S.sel : null;
    if (k === "ArrowRight" || k === "d" || k === "D") { e.preventDefault(); goTo(S.cur + 1); }
    else if (k === "ArrowLeft" || k === "a" || k === "A") { e.preventDefault(); goTo(S.cur - 1); }
    else if (k === " ") { e.preventDefault(); if (!e.repeat) { S.spaceDown = true; S.spaceUsed = false; } }
    else if (/^[1-9]$/.test(k)) {
      const c = S.classes.find((c) => c.hotkey === Number(k));
      if (!c) return;
      S.classId = c.id;
      if (sel && sel.class_id !== c.id && guardEdit()) updateBox(sel, { class_id: c.id });
      refresh();
    }
    else if (k === "g" || k === "G") { S.ghost = !S.ghost; $("ghost").checked = S.ghost; draw(); }
    else if (k === "m" || k === "M") { S.showModel = !S.showModel; $("show-model").checked = S.showModel; draw(); }
    else if (k === "Y" && e.shiftKey) { acceptAll(); }
    else if (k === "y" || k === "Enter") {
      if (sel && isModel(sel)) { e.preventDefault(); if (guardEdit()) acceptBox(sel); }
      else if (k === "y") {
        toast(sel ? "This box is already accepted (drawn or accepted boxes need no Y)."
          : frameBoxes().some((b) => isModel(b) && visible(b))
            ? "Nothing selected: click a pre-label or press Tab to select one, then Y."
            : "Nothing to accept on this frame: no pre-label or propagated box is shown.", "info");
      }
    }
    else if (k === "N" && e.shiftKey) { rejectRest(); }
    else if (k === "n" || k === "N" || k === "Delete" || k === "Backspace") {
      if (!sel) return;
      if ((k === "n" || k === "N") && !isModel(sel)) return;
      e.preventDefault();
      if (guardEdit()) removeBox(sel);
    }
    else if (k === "e" || k === "E") noFindings();
    else if (k === "p" || k === "P") propagate();
    else if (k === "T" && e.shiftKey) { if (needTrack()) acceptTrack(); }
    else if (k === "t") propagateTrack();
    else if (k === "u" || k === "U") fuse();
    else if (k === "f" || k === "F") fit();
    else if (k === "+" || k === "=") zoomAt(canvas.clientWidth / 2, canvas.clientHeight / 2, 1.25);
    else if (k === "-") zoomAt(canvas.clientWidth / 2, canvas.clientHeight / 2, 0.8);
    else if (k === "?") { toggleKeys(); }
    else if (k === "Escape") { if (!$("keys-help").hidden) toggleKeys(false); S.sel = null; S.track = null; S.drag = null; refresh(); }
    else if (k === "Tab") {
      e.preventDefault();
      const boxes = frameBoxes().filter(visible);
      if (!boxes.length) return;
      const i = boxes.indexOf(sel);
      S.sel = boxes[(i + (e.shiftKey ? boxes.length - 1 : 1)) % boxes.length];
      refresh();
    }
  });
  window.addEventListener("keyup", (e) => {
    if (e.key === " ") {
      S.spaceDown = false;
      // A tap plays or pauses; holding Space while dragging pans.
      if (!S.spaceUsed) togglePlay();
    }
  });
  canvas.addEventListener("mousedown", () => { if (S.spaceDown) S.spaceUsed = true; });

  // ---------- panels ----------
  function toast(text, kind) {
    const el = document.createElement("div");
    el.className = `toast ${kind || "info"}`;
    el.setAttribute("role", kind === "info" ? "status" : "alert");
    el.textContent = text;
    $("toasts").appendChild(el);
    setTimeout(() => el.classList.add("fade"), kind === "info" ? 2500 : 7000);
    setTimeout(() => el.remove(), kind === "info" ? 3000 : 7600);
  }

  function renderHead() {
    const st = $("status");
    st.className = `status ${S.scene.status}`;
    st.textContent = S.scene.status.replace("_", " ");
    $("assignee").textContent = S.scene.assignee ? `Assigned to ${S.scene.assignee}` : "Not assigned yet";
    const box = $("comment-box");
    box.hidden = !(S.scene.review_comment && S.scene.status !== "reviewed");
    $("comment-text").textContent = S.scene.review_comment || "";
  }

  function renderClasses() {
    const el = $("classes");
    el.innerHTML = "";
    for (const c of S.classes) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = `class-btn${c.id === S.classId ? " active" : ""}`;
      b.dataset.classId = c.id;
      b.innerHTML = `<kbd></kbd><span class="swatch"></span><span class="name"></span>`;
      b.querySelector("kbd").textContent = c.hotkey;
      b.querySelector(".swatch").style.background = c.color;
      b.querySelector(".name").textContent = c.name;
      b.addEventListener("click", () => {
        S.classId = c.id;
        const sel = S.sel && S.sel.frame_id === frame().id ? S.sel : null;
        if (sel && sel.class_id !== c.id && S.perms.edit) updateBox(sel, { class_id: c.id });
        refresh();
      });
      el.appendChild(b);
    }
  }

  function describe(b) {
    const o = S.review.origins[b.id];
    if (isModel(b)) return `${b.source === "model" ? "model" : "propagated"} ${b.model_version || ""} · ${(b.score ?? 0).toFixed(2)}`;
    if (o && o.kind === "accepted") return `accepted from ${o.model_version || "model"} (${(o.score ?? 0).toFixed(2)}) by ${b.author || "?"}`;
    if (o && o.kind === "edited") return `edited pre-label, IoU ${o.iou.toFixed(2)}${o.class_changed ? ", class changed" : ""} · ${b.author || "?"}`;
    if (b.model_version) return `accepted from ${b.model_version} by ${b.author || "?"}`;
    return `drawn by ${b.author || "?"}`;
  }

  function renderBoxList() {
    const f = frame();
    const list = $("box-list");
    list.innerHTML = "";
    const all = frameBoxes(f);
    const shown = all.filter(visible);
    $("box-count").textContent = all.length === shown.length ? plural(all.length, "box", "boxes")
      : `${shown.length} of ${plural(all.length, "box", "boxes")} (the rest below the threshold)`;
    if (!shown.length) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = f && f.reviewed_empty ? "Marked: no findings." : "None. Drag on the image to draw.";
      list.appendChild(li);
    }
    for (const b of shown) {
      const c = classOf(b.class_id);
      const li = document.createElement("li");
      li.className = `${b === S.sel ? "sel " : ""}${isModel(b) ? "model" : "manual"}`;
      li.dataset.boxId = b.id ?? "";
      li.innerHTML = `<span class="swatch"></span><div><div class="name"></div><div class="meta"></div></div>`;
      li.querySelector(".swatch").style.borderColor = c.color;
      if (!isModel(b)) li.querySelector(".swatch").style.background = c.color;
      li.querySelector(".name").textContent = `${c.name}${b.id ? ` #${b.id}` : ""}`;
      li.querySelector(".meta").textContent = describe(b);
      li.addEventListener("click", () => { S.sel = b; refresh(); });
      list.appendChild(li);
    }
    const nf = $("no-findings");
    nf.textContent = f && f.reviewed_empty ? "Clear “no findings”" : "No findings";
    nf.disabled = !S.perms.edit;
    $("accept-all").disabled = !S.perms.edit;
    $("reject-rest").disabled = !S.perms.edit;
    $("frame-audit").href = root.dataset.frameAuditUrl.replace("/0/", `/${f ? f.id : 0}/`);
  }

  function renderWorkflow() {
    const el = $("workflow-body");
    el.innerHTML = "";
    const st = S.scene.status;
    const p = (text, cls) => { const x = document.createElement("p"); x.className = cls || "small muted"; x.textContent = text; el.appendChild(x); return x; };
    const button = (text, cls, fn, id) => {
      const b = document.createElement("button"); b.type = "button"; b.textContent = text; b.className = cls; if (id) b.id = id;
      b.addEventListener("click", fn); el.appendChild(b); return b;
    };
    const editor = EDITORS.includes(S.user.role);
    const reviewer = ["admin", "reviewer"].includes(S.user.role);
    if (editor && assignedElsewhere() && EDITABLE.includes(st)) {
      p(`Assigned to ${S.scene.assignee}: you can look, not change it.`);
    } else if (editor && ["in_progress", "returned"].includes(st)) {
      p("When every frame has its boxes or is marked “no findings”, hand the scene to a reviewer.");
      button("Submit for review", "primary", () => setStatus("submitted"), "submit-scene");
      if (S.gate) {
        p(S.gate.message, "small gate-msg").id = "gate-msg";
        if (S.user.role === "admin") {
          const why = document.createElement("textarea");
          why.id = "override-reason"; why.rows = 2; why.placeholder = "Admin: why submit with these frames unfinished? (audited)";
          el.appendChild(why);
          button("Submit anyway", "danger", () => {
            if (!why.value.trim()) { toast("Give the reason for submitting unfinished frames.", "info"); why.focus(); return; }
            setStatus("submitted", "", why.value);
          }, "override-submit");
        }
      }
    } else if (editor && st === "new") {
      p("Draw the first box to start this scene.");
    } else if (st === "submitted" && !reviewer) {
      p("Submitted: locked until a reviewer accepts or returns it.");
    } else if (st === "reviewed" && !reviewer) {
      p("Reviewed and accepted.");
    }
    if (reviewer && ["submitted", "reviewed"].includes(st)) {
      const counts = { drawn: 0, accepted: 0, edited: 0, pending: 0 };
      for (const o of Object.values(S.review.origins)) counts[o.kind] = (counts[o.kind] || 0) + 1;
      const rejected = Object.values(S.review.rejected).reduce((n, l) => n + l.length, 0);
      p(`Boxes: ${counts.drawn} drawn, ${counts.accepted} pre-labels accepted as they were, ${counts.edited} pre-labels edited, ${rejected} rejected, ${counts.pending} left undecided.`, "small");
      const ta = document.createElement("textarea");
      ta.id = "review-comment"; ta.rows = 3; ta.placeholder = "What should the annotator fix? (needed to return)";
      el.appendChild(ta);
      const row = document.createElement("div"); row.className = "row"; el.appendChild(row);
      if (st === "submitted") row.appendChild(button("Accept scene", "primary", () => setStatus("reviewed", ta.value), "accept-scene"));
      row.appendChild(button("Return to annotator", "danger", () => {
        if (!ta.value.trim()) { toast("Write what to fix before returning the scene.", "info"); ta.focus(); return; }
        setStatus("returned", ta.value);
      }, "return-scene"));
    }
  }

  function renderTimeline() {
    const el = $("timeline");
    if (el.childElementCount !== S.frames.length) {
      el.innerHTML = "";
      S.frames.forEach((f, i) => {
        const c = document.createElement("span");
        c.title = `frame #${f.index}`;
        c.addEventListener("click", () => goTo(i));
        el.appendChild(c);
      });
    }
    const counts = { boxes: 0, empty: 0, undecided: 0, missing: 0 };
    S.frames.forEach((f, i) => {
      const boxes = S.boxes[f.id] || [];
      const manual = boxes.some((b) => !isModel(b)), model = boxes.some((b) => isModel(b) && visible(b));
      const cov = coverageOf(f);
      counts[cov.state]++;
      const cell = el.children[i];
      cell.className = `${i === S.cur ? "cur " : ""}${manual ? "has-boxes" : model ? "has-model" : f.reviewed_empty ? "empty" : ""} cov-${cov.state}`;
      cell.title = `Frame ${f.index}: ${{ boxes: plural(cov.manual, "box", "boxes"), empty: "no findings",
        undecided: `${cov.undecided} undecided`, missing: "not done yet" }[cov.state]}`;
    });
    $("coverage").textContent = `Frames: ${counts.boxes} with boxes · ${counts.empty} no findings · ` +
      `${counts.undecided} with undecided boxes · ${counts.missing} not done`;
    if (S.gate && !counts.undecided && !counts.missing) { S.gate = null; renderWorkflow(); }
  }

  function renderOverlay() {
    const f = frame();
    if (!f) return;
    $("frame-info").textContent = `Frame ${f.index} (${S.cur + 1} of ${S.frames.length} in this scene) · ${(f.timestamp_ms / 1000).toFixed(2)} s`;
    $("zoom-info").textContent = `${Math.round(S.view.scale * 100)} %${S.ghost ? " · ghost" : ""}`;
    $("empty-badge").hidden = !f.reviewed_empty;
  }

  function renderUndo() {
    $("undo").disabled = !S.undo.length;
    $("redo").disabled = !S.redo.length;
  }

  function refresh() {
    if (!frame()) return;
    $("scrubber").value = S.cur;
    $("frame-counter").textContent = `${S.cur + 1} of ${S.frames.length}`;
    for (const b of document.querySelectorAll(".class-btn")) b.classList.toggle("active", Number(b.dataset.classId) === S.classId);
    if (S.sel && !visible(S.sel)) S.sel = null;
    if (S.sel && S.sel.track_id != null) S.track = S.sel.track_id;
    renderBoxList();
    renderOffers();
    renderTimeline();
    renderTracks();
    draw();
  }

  // ---------- controls ----------
  function slider(id, out, fmt, apply) {
    const input = $(id);
    const update = () => { const v = Number(input.value); $(out).textContent = fmt(v); apply(v); };
    input.addEventListener("input", update);
    input.addEventListener("pointerup", () => input.blur());
    return update;
  }
  const updThr = slider("threshold", "thr-out", (v) => v.toFixed(2), (v) => { S.threshold = v; refresh(); });
  const updBri = slider("brightness", "bri-out", (v) => `${v > 0 ? "+" : ""}${v}`, (v) => { S.adj.brightness = v; draw(); });
  const updCon = slider("contrast", "con-out", (v) => v.toFixed(2), (v) => { S.adj.contrast = v; draw(); });
  const updGam = slider("gamma", "gam-out", (v) => v.toFixed(2), (v) => { S.adj.gamma = v; draw(); });
  $("adj-reset").addEventListener("click", () => {
    $("brightness").value = 0; $("contrast").value = 1; $("gamma").value = 1; updBri(); updCon(); updGam();
  });
  $("ghost").addEventListener("change", (e) => { S.ghost = e.target.checked; draw(); });
  $("show-model").addEventListener("change", (e) => { S.showModel = e.target.checked; draw(); });
  // A team decides once whether its model's boxes are tight enough to steer: kept across scenes.
  $("steer").addEventListener("change", (e) => {
    S.steer = e.target.checked;
    try { localStorage.setItem("sonolabel.steer", S.steer ? "1" : "0"); } catch (_) { /* storage off */ }
  });
  $("fit").addEventListener("click", fit);
  function toggleKeys(show) {
    const el = $("keys-help");
    el.hidden = show === undefined ? !el.hidden : !show;
  }
  $("keys-open").addEventListener("click", () => toggleKeys(true));
  $("keys-close").addEventListener("click", () => toggleKeys(false));
  $("accept-all").addEventListener("click", acceptAll);
  $("no-findings").addEventListener("click", noFindings);
  $("prelabel").addEventListener("click", prelabel);
  $("propagate").addEventListener("click", propagate);
  $("prev").addEventListener("click", () => goTo(S.cur - 1));
  $("next").addEventListener("click", () => goTo(S.cur + 1));
  $("play").addEventListener("click", togglePlay);
  $("undo").addEventListener("click", undo);
  $("redo").addEventListener("click", redo);
  $("scrubber").addEventListener("input", (e) => goTo(Number(e.target.value)));
  new ResizeObserver(resize).observe(stage);

  // ---------- start ----------
  async function load() {
    const data = await api("GET", root.dataset.sceneUrl);
    Object.assign(S, { scene: data.scene, classes: data.classes, frames: data.frames, review: data.review,
                       perms: data.permissions, user: data.user });
    S.boxes = {};
    for (const f of S.frames) S.boxes[f.id] = (data.boxes[String(f.id)] || []);
    S.classId = S.classes.length ? S.classes[0].id : null;
    const reviewer = ["reviewer"].includes(S.user.role) || (S.user.role === "admin" && S.scene.status === "submitted");
    S.showModel = reviewer; $("show-model").checked = reviewer;
    try { S.steer = localStorage.getItem("sonolabel.steer") === "1"; } catch (_) { S.steer = false; }
    $("steer").checked = S.steer;
    $("scrubber").max = Math.max(0, S.frames.length - 1);
    // Start at the pre-labels' model's validation threshold, rounded down to the slider's step
    // so no box scoring exactly that threshold is hidden.
    if (data.prelabel_threshold) $("threshold").value = Math.floor(data.prelabel_threshold.value * 100) / 100;
    updThr();
    await loadTrackState();
    renderClasses(); renderHead(); renderWorkflow(); renderUndo();
    root.classList.toggle("readonly", !S.perms.edit);
    saveState();
    prefetch();
    S.view.fitted = false;
    resize();
    refresh();
    root.dataset.ready = "1";
  }
  load().catch((err) => toast(`The scene could not be loaded: ${err.message}`, "error"));
})();
