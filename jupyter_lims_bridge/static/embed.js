// The bridge's pages inside an ELN's iframe: tells the embedding page what
// happened with postMessage, addressed to the parent's exact origin and only when
// that origin is one of `embed_origins` (the page's data-embed-origins), and
// checks whether this frame may keep cookies. Error pages post their reason here;
// the launch page calls window.limsBridgeEmbed.
(function () {
  "use strict";
  var holder = document.querySelector("[data-embed-origins]");
  var allowed = holder ? (holder.dataset.embedOrigins || "").split(" ").filter(Boolean) : [];
  var framed = window.parent !== window;

  function originOf(url) {
    try { return new URL(url).origin; } catch (e) { return null; }
  }

  // The parent's origin when the browser says it (Chromium, Safari); null otherwise.
  function parentOrigin() {
    var ancestors = window.location.ancestorOrigins;
    if (ancestors && ancestors.length) { return ancestors[0]; }
    return null;
  }

  // Post {type, ...detail} to the parent when its origin is allowed. Without
  // ancestorOrigins (Firefox) each allowed origin is addressed: the browser
  // delivers the message only to a parent of exactly that origin.
  function post(type, detail) {
    if (!framed || !allowed.length) { return false; }
    var message = Object.assign({ type: type }, detail || {});
    var known = parentOrigin();
    var targets = known ? allowed.filter(function (o) { return o === known; }) : allowed;
    targets.forEach(function (origin) { window.parent.postMessage(message, origin); });
    return targets.length > 0;
  }

  // Inside a cross-site frame a browser that blocks third-party cookies drops
  // every cookie this server sets: JupyterLab would loop through the login.
  function cookiesBlocked() {
    if (!framed) { return false; }
    var name = "lims_bridge_cookie_check";
    var secure = window.location.protocol === "https:" || window.isSecureContext;
    document.cookie = name + "=1; Path=/; Max-Age=60; SameSite=None" + (secure ? "; Secure" : "");
    var kept = document.cookie.split(";").some(function (c) { return c.trim() === name + "=1"; });
    document.cookie = name + "=; Path=/; Max-Age=0; SameSite=None" + (secure ? "; Secure" : "");
    return !kept;
  }

  window.limsBridgeEmbed = { post: post, framed: framed, cookiesBlocked: cookiesBlocked, originOf: originOf };

  var errorPage = document.getElementById("lims-error-page");
  if (errorPage) {
    post("lims-bridge:error", { reason: errorPage.dataset.reason });
  }
})();
