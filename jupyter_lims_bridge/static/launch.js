// The launch page of a deep link: performs the open (POST lims/api/open), shows
// progress of the entry's data, then navigates to the notebook. Everything that
// writes happens here, after the page loaded, never on the GET itself.
(function () {
  "use strict";
  var root = document.getElementById("lims-launch");
  var statusLine = document.getElementById("lims-status");
  var dataList = document.getElementById("lims-data");
  var errorLine = document.getElementById("lims-error");
  var actions = document.getElementById("lims-actions");
  var POLL_MS = 500;

  function go(url) {
    statusLine.textContent = "Opening the notebook…";
    // replace(): the back button must not return to a used link
    window.location.replace(url);
  }

  function fail(message) {
    statusLine.textContent = "";
    errorLine.hidden = false;
    errorLine.textContent = message;
  }

  function request(method, url, body) {
    var headers = { "X-XSRFToken": root.dataset.xsrf, "Accept": "application/json" };
    if (body !== undefined) { headers["Content-Type"] = "application/json"; }
    return fetch(url, {
      method: method, headers: headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body)
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (json) {
        if (!response.ok) {
          var error = new Error(json.message || ("HTTP " + response.status));
          error.reason = json.reason;
          throw error;
        }
        return json;
      });
    });
  }

  function formatBytes(n) {
    if (n === null || n === undefined) { return "?"; }
    var units = ["B", "KiB", "MiB", "GiB", "TiB"];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i === 0 ? String(n) : n.toFixed(1)) + " " + units[i];
  }

  var STATUS_TEXT = {
    linked: "linked", queued: "waiting", running: "downloading", done: "ready",
    failed: "failed", conflict: "a different file is already there (kept)"
  };

  // one <li> per item: "name — status", a progress bar while a download runs,
  // bytes and speed, and the reason and message when it failed
  function showData(items) {
    dataList.textContent = "";
    items.forEach(function (item) {
      var li = document.createElement("li");
      li.dataset.name = item.name;
      li.dataset.status = item.status;
      var label = document.createElement("span");
      label.className = "lims-data-name";
      label.textContent = item.name + " — " + (STATUS_TEXT[item.status] || item.status);
      li.appendChild(label);
      if (item.job && (item.status === "queued" || item.status === "running" || item.bytesTotal)) {
        var bar = document.createElement("progress");
        if (item.bytesTotal) {
          bar.max = item.bytesTotal;
          bar.value = item.bytesDone || 0;
        } // without a known size the bar stays indeterminate
        li.appendChild(bar);
        var bytes = document.createElement("span");
        bytes.className = "lims-data-bytes";
        var text = formatBytes(item.bytesDone || 0) +
          (item.bytesTotal ? " of " + formatBytes(item.bytesTotal) : "");
        if (item.status === "running" && item.speed) { text += " · " + formatBytes(item.speed) + "/s"; }
        bytes.textContent = text;
        li.appendChild(bytes);
      }
      if (item.status === "failed" || item.status === "conflict") {
        var why = document.createElement("div");
        why.className = "lims-error";
        why.textContent = (item.message || "") + (item.reason ? " (" + item.reason + ")" : "");
        li.appendChild(why);
      }
      dataList.appendChild(li);
    });
  }

  function merge(result, jobs) {
    return result.data.map(function (d) {
      var job = d.job && jobs[d.job];
      if (!job) { return d; }
      return { name: d.name, job: d.job, status: job.state, reason: job.reason, message: job.message,
               bytesDone: job.bytesDone, bytesTotal: job.bytesTotal, speed: job.speed };
    });
  }

  // after a failure: the user decides - open the notebook anyway, or retry the failed jobs
  function offerChoice(result, items) {
    return new Promise(function (resolve) {
      statusLine.textContent = "Some of the entry's data could not be fetched.";
      actions.hidden = false;
      actions.textContent = "";
      var open = document.createElement("a");
      open.className = "lims-button";
      open.href = result.url;
      open.textContent = "Open the notebook anyway";
      open.addEventListener("click", function (event) { event.preventDefault(); resolve(result); });
      actions.appendChild(open);
      var failed = items.filter(function (d) { return d.status === "failed" && d.job && d.reason !== "conflict"; });
      if (failed.length) {
        var retry = document.createElement("button");
        retry.type = "button";
        retry.className = "lims-button";
        retry.textContent = "Retry";
        retry.addEventListener("click", function () {
          actions.hidden = true;
          Promise.all(failed.map(function (d) {
            return request("POST", root.dataset.stagingUrl + "/" + encodeURIComponent(d.job));
          })).then(function () { return waitForJobs(result, true); }, function (error) {
            fail(error.message);
            return result;
          }).then(resolve);
        });
        actions.appendChild(document.createTextNode(" "));
        actions.appendChild(retry);
      }
    });
  }

  function waitForJobs(result, force) {
    var pending = result.data.filter(function (d) { return d.job && (d.status === "queued" || d.status === "running"); });
    if (!force && (!pending.length || root.dataset.waitForData !== "true")) { return Promise.resolve(result); }
    statusLine.textContent = "Fetching the entry's data…";
    return new Promise(function (resolve) {
      function poll() {
        request("GET", root.dataset.stagingUrl).then(function (body) {
          var jobs = {};
          (body.jobs || []).forEach(function (job) { jobs[job.id] = job; });
          var items = merge(result, jobs);
          showData(items);
          var running = items.some(function (d) { return d.status === "queued" || d.status === "running"; });
          if (running) { setTimeout(poll, POLL_MS); return; }
          if (items.some(function (d) { return d.status === "failed"; })) {
            offerChoice(result, items).then(resolve);
            return;
          }
          resolve(result);
        }).catch(function () { resolve(result); });
      }
      poll();
    });
  }

  if (root.dataset.replayUrl) {
    // this browser already used the link: go to the notebook it made, do nothing else
    go(root.dataset.replayUrl);
    return;
  }
  request("POST", root.dataset.apiUrl, { token: root.dataset.token })
    .then(function (result) { showData(result.data); return waitForJobs(result); })
    .then(function (result) { go(result.url); })
    .catch(function (error) { fail(error.message); });
})();
