// Upload with a progress bar: the browser's own form post shows no progress for large cines.
(function () {
  const form = document.getElementById("upload-form");
  if (!form || !window.XMLHttpRequest) return;
  const bar = document.getElementById("upload-progress");
  const status = document.getElementById("upload-status");
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.action || window.location.href);
    xhr.setRequestHeader("Accept", "application/json");
    bar.hidden = false;
    xhr.upload.onprogress = function (e) {
      if (e.lengthComputable) {
        bar.value = Math.round((100 * e.loaded) / e.total);
        status.textContent = "Uploading… " + bar.value + "%";
      }
    };
    xhr.upload.onload = function () { bar.removeAttribute("value"); status.textContent = "Importing: decoding, cropping, cutting scenes…"; };
    xhr.onload = function () {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (e) { /* an HTML error page */ }
      if (xhr.status < 300 && body.url) { window.location = body.url; return; }
      bar.hidden = true;
      status.textContent = body.error || ("Import failed (HTTP " + xhr.status + ").");
      status.className = "flash error";
    };
    xhr.onerror = function () { bar.hidden = true; status.textContent = "The upload was interrupted."; };
    xhr.send(new FormData(form));
  });
})();
