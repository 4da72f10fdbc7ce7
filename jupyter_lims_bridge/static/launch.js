// The launch page of a deep link: performs the open (POST lims/api/open), shows
// progress of the entry's data, then navigates to the notebook. Everything that
// writes happens here, after the page loaded, never on the GET itself.
(function () {
  "use strict";
  var root = document.getElementById("lims-launch");
  var statusLine = document.getElementById("lims-status");
  var dataList = document.getElementById("lims-data");
  var errorLine = document.getElementById("lims-error");
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

  function showData(items) {
    dataList.textContent = "";
    items.forEach(function (item) {
      var li = document.createElement("li");
      li.dataset.name = item.name;
      li.textContent = item.name + ": " + item.status + (item.reason ? " (" + item.reason + ")" : "");
      if (item.bytesTotal) {
        var bar = document.createElement("progress");
        bar.max = item.bytesTotal;
        bar.value = item.bytesDone || 0;
        li.appendChild(bar);
      }
      dataList.appendChild(li);
    });
  }

  function waitForJobs(result) {
    var pending = result.data.filter(function (d) { return d.job && (d.status === "queued" || d.status === "running"); });
    if (!pending.length || root.dataset.waitForData !== "true") { return Promise.resolve(result); }
    statusLine.textContent = "Fetching the entry's data…";
    return new Promise(function (resolve) {
      function poll() {
        request("GET", root.dataset.stagingUrl).then(function (body) {
          var jobs = {};
          (body.jobs || []).forEach(function (job) { jobs[job.id] = job; });
          var items = result.data.map(function (d) {
            var job = d.job && jobs[d.job];
            return job ? { name: d.name, status: job.state, reason: job.reason,
                            bytesDone: job.bytesDone, bytesTotal: job.bytesTotal } : d;
          });
          showData(items);
          var running = items.some(function (d) { return d.status === "queued" || d.status === "running"; });
          if (running) { setTimeout(poll, POLL_MS); } else { resolve(result); }
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
