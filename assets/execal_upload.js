/* execal: the Data panel's upload goes to the server as a stream, never as base64 inside a callback.
 *
 * dcc.Upload would read the whole file into the page as a base64 data URL and send it inside one JSON
 * callback request (a 195 MB file cost the server's worker 1.3 GB). This script takes the file the upload
 * box (#upload-data) was given -- chosen or dropped -- before dcc.Upload reads it, posts the raw bytes to
 * /_execal/upload (streamed to a private file there, refused past the limit), and hands the server's
 * answer {token, name, bytes} to the panel's store (#streamed-data), whose callback parses the file on the
 * server. Same-origin only: the session cookie rides along and the X-Execal-Upload header marks the page.
 * If this script cannot run, dcc.Upload's own path still works (the server caps it).
 */
(function () {
  "use strict";
  var BOX = "upload-data";
  var STORE = "streamed-data";
  var ALERT = "alert-data";
  var SIZE_ALERT = "size-alert-data";
  var KEPT = "\nThe dataset shown below is unchanged.";

  function box(el) {
    return el && el.closest ? el.closest("#" + BOX) : null;
  }

  function setProps(id, props) {
    var dc = window.dash_clientside;
    if (dc && dc.set_props) {
      dc.set_props(id, props);
      return true;
    }
    return false;
  }

  function send(file, where) {
    if (!(window.dash_clientside && window.dash_clientside.set_props) || !window.fetch) {
      return false;            // dcc.Upload's own path takes it
    }
    var info = where.querySelector("[data-max-bytes]");
    var max = info ? Number(info.getAttribute("data-max-bytes")) : 0;
    setProps(ALERT, {is_open: false});
    setProps(SIZE_ALERT, {is_open: false});
    if (max && file.size > max) {
      setProps(SIZE_ALERT, {is_open: true, children: file.name + ": the file is over the " +
        (info.getAttribute("data-limit") || (max / 1048576).toFixed(0) + " MB") +
        " upload limit and was not loaded." + KEPT});
      return true;
    }
    where.setAttribute("aria-busy", "true");
    window.fetch("/_execal/upload", {
      method: "POST",
      body: file,
      credentials: "same-origin",
      headers: {
        "X-Execal-Upload": "1",
        "X-Execal-Filename": encodeURIComponent(file.name),
        "Content-Type": "application/octet-stream"
      }
    }).then(function (r) {
      return r.json().catch(function () { return {error: "the server answered " + r.status}; })
        .then(function (body) { return {ok: r.ok, body: body}; });
    }).then(function (res) {
      where.removeAttribute("aria-busy");
      if (res.ok && res.body.token) {
        setProps(STORE, {data: {token: res.body.token, name: res.body.name, bytes: res.body.bytes,
                                at: Date.now()}});
      } else {
        setProps(ALERT, {is_open: true, children: (res.body.error || "the upload failed") + KEPT});
      }
    }).catch(function (err) {
      where.removeAttribute("aria-busy");
      setProps(ALERT, {is_open: true, children: file.name + ": the upload failed (" + err + ")." + KEPT});
    });
    return true;
  }

  // capture phase on window: runs before React's listeners, so dcc.Upload never reads the file
  window.addEventListener("change", function (e) {
    var t = e.target;
    var where = box(t);
    if (!where || !t || t.type !== "file" || !t.files || !t.files.length) {
      return;
    }
    var file = t.files[0];
    if (send(file, where)) {
      e.stopImmediatePropagation();
      e.stopPropagation();
      t.value = "";
    }
  }, true);

  window.addEventListener("drop", function (e) {
    var where = box(e.target);
    if (!where || !e.dataTransfer || !e.dataTransfer.files || !e.dataTransfer.files.length) {
      return;
    }
    e.preventDefault();
    if (send(e.dataTransfer.files[0], where)) {
      e.stopImmediatePropagation();
      e.stopPropagation();
    }
  }, true);
})();
