// The launch page of a deep link: performs the open (POST lims/api/open), shows
// progress of the entry's data, then navigates to the notebook. Everything that
// writes happens here, after the page loaded, never on the GET itself. Inside an
// ELN's iframe it reports to the parent (embed.js) and, when the frame may not
// keep cookies, offers "Open in a new tab" instead of opening into a login loop.
(function () {
  "use strict";
  var root = document.getElementById("lims-launch");
  var statusLine = document.getElementById("lims-status");
  var dataList = document.getElementById("lims-data");
  var errorLine = document.getElementById("lims-error");
  var actions = document.getElementById("lims-actions");
  var embed = window.limsBridgeEmbed || { post: function () { return false; }, cookiesBlocked: function () { return false; } };
  var words = JSON.parse(document.getElementById("lims-words").textContent || "{}");
  var entity = { type: root.dataset.entityType, id: root.dataset.entityId };
  var POLL_MS = 500;

  function go(url, path) {
    statusLine.textContent = "Opening the notebook…";
    embed.post("lims-bridge:opened", { entity: entity, path: path || null, url: new URL(url, window.location.href).href });
    // replace(): the back button must not return to a used link
    window.location.replace(url);
  }

  function link(text, href, className, top) {
    var a = document.createElement("a");
    a.className = className;
    a.href = href;
    a.textContent = text;
    if (top) { a.target = "_top"; a.rel = "noreferrer noopener"; }
    return a;
  }

  // an error in a scientist's words, a way out (the entry, or JupyterLab's home),
  // and the technical message and stable reason small underneath
  function fail(message, reason) {
    var said = words[reason] || {
      heading: "This entry could not be opened",
      advice: "Go back to the entry in the ELN and click \"Open in Jupyter\" again.",
      way_out: "entry"
    };
    statusLine.textContent = "";
    errorLine.hidden = false;
    document.getElementById("lims-error-heading").textContent = said.heading;
    document.getElementById("lims-error-advice").textContent = said.advice;
    document.getElementById("lims-error-message").textContent = message || "";
    document.getElementById("lims-error-reason").textContent = reason || "";
    var out = document.getElementById("lims-error-actions");
    out.textContent = "";
    var entryUrl = root.dataset.entityUrl;
    if (entryUrl && said.way_out === "entry") {
      out.appendChild(link("Back to the ELN entry", entryUrl, "lims-button", true));
      out.appendChild(document.createTextNode(" "));
      out.appendChild(link("Go to JupyterLab", root.dataset.homeUrl, "lims-link"));
    } else {
      out.appendChild(link("Go to JupyterLab", root.dataset.homeUrl, "lims-button"));
    }
    embed.post("lims-bridge:error", { entity: entity, reason: reason || null, message: message || null });
  }

  // the frame may not keep cookies: JupyterLab could not sign in here, so the
  // notebook opens in a tab of its own (the link is not used up until then)
  function offerNewTab() {
    statusLine.textContent = "";
    actions.hidden = false;
    actions.textContent = "";
    var text = document.createElement("p");
    text.id = "lims-cookies-blocked";
    text.textContent = "Your browser does not let JupyterLab keep you signed in inside this page. " +
      "Open the notebook in a tab of its own.";
    actions.appendChild(text);
    var open = link("Open in a new tab", window.location.href, "lims-button");
    open.id = "lims-new-tab";
    open.target = "_blank";
    open.rel = "noopener";
    actions.appendChild(open);
    embed.post("lims-bridge:error", { entity: entity, reason: "cookies_blocked",
                                      message: "Third-party cookies are blocked in this browser." });
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
          error.reason = json.reason || (response.status >= 500 ? "server_error" : null);
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
            fail(error.message, error.reason);
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

  if (embed.cookiesBlocked()) {
    offerNewTab();
    return;
  }
  if (root.dataset.replayUrl) {
    // this browser already used the link: go to the notebook it made, do nothing else
    go(root.dataset.replayUrl);
    return;
  }
  request("POST", root.dataset.apiUrl, { token: root.dataset.token })
    .then(function (result) { showData(result.data); return waitForJobs(result); })
    .then(function (result) { go(result.url, result.path); })
    .catch(function (error) { fail(error.message, error.reason); });
})();
