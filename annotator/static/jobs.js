/* Jobs page: poll /jobs/status.json for the jobs still queued or running and move their
 * progress bars, status, result and log; polling stops when every listed job has ended. */
(() => {
  "use strict";
  const table = document.getElementById("jobs");
  if (!table) return;
  const ENDED = ["succeeded", "failed", "cancelled"];
  const rows = () => Array.from(table.querySelectorAll("tr[data-job-id]"));

  function update(row, job) {
    row.dataset.status = job.status;
    const st = row.querySelector(".job-status");
    st.textContent = job.status; st.className = `job-status ${job.status}`;
    row.querySelector("progress").value = job.progress;
    row.querySelector(".pct").textContent = `${Math.round(job.progress)}%`;
    const cell = row.querySelector(".job-result");
    const log = cell.querySelector(".job-log");
    if (log) log.textContent = job.log_tail || "";
    for (const el of cell.querySelectorAll(".job-error, code")) el.remove();
    if (job.error) { const e = document.createElement("div"); e.className = "job-error"; e.textContent = job.error; cell.prepend(e); }
    if (job.result) { const c = document.createElement("code"); c.textContent = JSON.stringify(job.result); cell.insertBefore(c, cell.querySelector("details")); }
    if (ENDED.includes(job.status)) { const f = row.querySelector("form.cancel"); if (f) f.remove(); }
  }

  async function poll() {
    const open = rows().filter((r) => !ENDED.includes(r.dataset.status)).map((r) => r.dataset.jobId);
    if (!open.length) return;
    try {
      const resp = await fetch(`${table.dataset.statusUrl}?ids=${open.join(",")}`,
                               { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (resp.ok) {
        const data = await resp.json();
        for (const job of data.jobs) {
          const row = table.querySelector(`tr[data-job-id="${job.id}"]`);
          if (row) update(row, job);
        }
      }
    } catch (_) { /* the server is restarting: try again */ }
    setTimeout(poll, 1000);
  }
  setTimeout(poll, 500);
})();
