// Scene list: the header checkbox ticks or clears every scene for assignment.
document.getElementById("tick-all").addEventListener("change", (e) => {
  for (const box of document.querySelectorAll("input[name=scene_id]")) box.checked = e.target.checked;
});
