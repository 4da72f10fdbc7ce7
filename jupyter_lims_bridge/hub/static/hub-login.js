// The hub's LIMS launch page: log in with the token (POST /hub/lims/login), then
// go on to the deep link. Nothing is used up until this script runs, so link
// previewers that fetch the page without running scripts cannot burn the login.
(function () {
  "use strict";
  var root = document.getElementById("lims-hub-login");
  if (!root) { return; }
  var statusLine = document.getElementById("lims-status");
  var errorLine = document.getElementById("lims-error");
  var body = new URLSearchParams();
  body.set("lims_token", root.dataset.token);
  body.set("next", root.dataset.next);
  body.set("_xsrf", root.dataset.xsrf);
  fetch(root.dataset.postUrl, {
    method: "POST", credentials: "same-origin", body: body,
    headers: { "Accept": "application/json", "X-XSRFToken": root.dataset.xsrf }
  }).then(function (response) {
    return response.json().catch(function () { return {}; }).then(function (json) {
      if (!response.ok) {
        throw new Error((json.message || ("HTTP " + response.status)) +
                        (json.reason ? " (" + json.reason + ")" : ""));
      }
      statusLine.textContent = "Signed in. Opening…";
      // replace(): the back button must not return to a used link
      window.location.replace(json.next);
    });
  }).catch(function (error) {
    statusLine.textContent = "";
    errorLine.hidden = false;
    errorLine.textContent = error.message;
  });
})();
