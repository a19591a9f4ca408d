/* wangge dashboard: map styling functions for dash-leaflet and the wall's live feed (server-sent events). */
(function () {
  "use strict";
  var LIVE_MAX = 100;          // markers kept at most
  var LIVE_MS = 60000;         // a new event pulses, then fades and is removed after this long
  var FLUSH_MS = 200;          // live changes are drawn together, at most this often

  window.wangge = {
    villageStyle: function (feature, context) {
      var h = (context && context.hideout) || {};
      var colors = h.colors || {};
      return {fillColor: colors[feature.properties.code] || h.default || "#24384f", fillOpacity: 0.78,
              color: "#9fb3c8", weight: 1};
    },
    townStyle: function () { return {fill: false, color: "#e6edf3", weight: 3}; },
    waterStyle: function () { return {fillColor: "#2f6f9f", fillOpacity: 0.7, color: "#3d8bd0", weight: 2}; },
    cellStyle: function () { return {fill: false, color: "#c8d6e5", weight: 0.8, dashArray: "3 3"}; },
    outline: function () { return {fillColor: "#1b2a3a", fillOpacity: 0.35, color: "#9fb3c8", weight: 1}; },
    densityStyle: function (feature, context) {
      var max = ((context && context.hideout) || {}).max || 1;
      var n = feature.properties.count || 0;
      var x = Math.min(1, n / max);
      return {fillColor: n ? "rgb(255," + Math.round(220 - 180 * x) + "," + Math.round(120 - 100 * x) + ")" : "#1b2a3a",
              fillOpacity: n ? 0.25 + 0.6 * x : 0.1, color: "#31445a", weight: 0.5};
    },
    giStyle: function (feature, context) {
      var colors = ((context && context.hideout) || {}).colors || {};
      var cls = feature.properties["class"] || "none";
      return {fill: false, color: colors[cls] || "rgba(0,0,0,0)", weight: cls === "none" ? 0 : 3};
    },
    device: function (feature, latlng) {
      var kind = feature.properties.kind === "camera" ? "camera" : "sensor";
      return L.marker(latlng, {icon: L.divIcon({className: "dev dev-" + kind, iconSize: [10, 10]}),
                               interactive: false, keyboard: false});
    },
    recurring: function (feature, latlng) {
      var n = feature.properties.count || 3;
      return L.circleMarker(latlng, {radius: 6 + Math.min(14, n), color: "#ffd54f", weight: 3, fill: false});
    },
    pulse: function (feature, latlng) {
      var age = (Date.now() - feature.properties.t) / 1000;
      var html = '<span class="pulse-dot" style="animation-delay:-' + age.toFixed(1) + 's"></span>';
      return L.marker(latlng, {icon: L.divIcon({className: "pulse", html: html, iconSize: [36, 36]}),
                               interactive: false, keyboard: false});
    },
    /* The ticker: entries pushed by the feed (already in the reader's language) merged by case id, newest first,
       at most `size` kept; rendered as the same <li> the server renders (dashboard/ticker.py). */
    mergeTicker: function (rows, entries, size) {
      var byId = {};
      (entries || []).forEach(function (x) { byId[x.id] = x; });
      rows.forEach(function (r) { if (r.entry) { byId[r.entry.id] = r.entry; } });
      var list = Object.keys(byId).map(function (k) { return byId[k]; })
        .sort(function (a, b) { return b.id - a.id; }).slice(0, size);
      function span(cls, text) {
        return {type: "Span", namespace: "dash_html_components", props: {className: cls, children: text}};
      }
      var items = list.map(function (x) {
        return {type: "Li", namespace: "dash_html_components", props: {
          className: "tick", "data-id": String(x.id), key: String(x.id), children: [
            span("tick-time", x.time), span("tick-id", "#" + x.id), span("tick-cat", x.category),
            span("tick-status st-" + x.status, x.status_label), span("tick-where", x.where)]}};
      });
      return [items, list];
    },
    /* The live layer: new cases added (at their arrival time `t`), old ones dropped (bounded in count and age).
       Returns null when the set of markers is unchanged (nothing to redraw). */
    mergeLive: function (rows, feats, t) {
      var now = Date.now();
      var kept = feats.filter(function (f) { return now - f.properties.t < LIVE_MS; });
      var shown = {};
      kept.forEach(function (f) { shown[f.properties.id] = true; });
      rows.forEach(function (r) {
        if (!r["new"] || r.lon === null || r.lon === undefined || shown[r.id]) { return; }
        shown[r.id] = true;
        kept.push({type: "Feature", geometry: {type: "Point", coordinates: [r.lon, r.lat]},
                   properties: {id: r.id, t: t || now}});
      });
      if (kept.length > LIVE_MAX) { kept = kept.slice(kept.length - LIVE_MAX); }
      var ids = function (fs) { return fs.map(function (f) { return f.properties.id; }).join(); };
      return ids(kept) === ids(feats) ? null : kept;
    }
  };

  /* The feed: opened while a wall is on the page, closed when it is gone. Each message updates the ticker and the
     live markers directly (set_props on those outputs) rather than through a callback input: Dash runs a callback
     once, with the latest value only, when its input changes several times quickly (messages would be lost), and
     it records every change of a callback input in its undo history, which on a wall never stops growing. */
  var source = null, slowSeq = 0, slowTimer = null;
  var wall = null, entries = [], feats = [];   // the wall page on screen, its ticker entries and live markers
  function setProps(id, props) {
    if (window.dash_clientside && window.dash_clientside.set_props) { window.dash_clientside.set_props(id, props); }
  }
  function currentWall() {
    var el = document.getElementById("wall-ready");
    if (el !== wall) {          // a (re)rendered wall: start from what the server rendered into it
      wall = el;
      feats = [];
      var tick = document.getElementById("ticker");
      try { entries = JSON.parse((tick && tick.getAttribute("data-entries")) || "[]"); } catch (e) { entries = []; }
    }
    return wall;
  }
  function tickerSize() {
    var el = document.getElementById("ticker");
    return parseInt((el && el.getAttribute("data-size")) || "10", 10);
  }
  function showLive(rows, t) {
    var next = window.wangge.mergeLive(rows, feats, t);
    if (next !== null) {
      feats = next;
      setProps("live-layer", {data: {type: "FeatureCollection", features: feats}});
    }
  }
  var pending = [], flushTimer = null;
  function flush() {           // at most one redraw of the ticker and the markers per FLUSH_MS, however many messages
    flushTimer = null;
    var rows = pending;
    pending = [];
    if (!currentWall()) { return; }
    if (rows.some(function (r) { return r.entry; })) {
      var merged = window.wangge.mergeTicker(rows, entries, tickerSize());
      entries = merged[1];
      setProps("ticker", {children: merged[0]});
    }
    showLive(rows, Date.now());
  }
  function onChange(msg) {
    var rows;
    try { rows = JSON.parse(msg.data); } catch (e) { return; }
    pending = pending.concat(rows);
    if (!flushTimer) { flushTimer = setTimeout(flush, FLUSH_MS); }
    if (!slowTimer) {
      slowTimer = setTimeout(function () { slowTimer = null; slowSeq += 1; setProps("feed-slow", {data: {n: slowSeq}}); },
                             2000);
    }
  }
  /* Dash keeps every change of a callback input (the periodic refresh, the window buttons) for undo; nothing here
     undoes, so only the last few are kept. */
  function trimHistory() {
    (window.dash_stores || []).forEach(function (store) {
      var h = store && store.getState && store.getState().history;
      if (h && Array.isArray(h.past) && h.past.length > 50) { h.past.splice(0, h.past.length - 50); }
    });
  }
  setInterval(trimHistory, 60000);
  setInterval(function () { if (currentWall()) { showLive([], 0); } }, 5000);  // markers fade out
  function watch() {
    var onWall = !!currentWall();
    if (onWall && !source && window.EventSource) {
      source = new EventSource("/dashboard/feed");
      source.addEventListener("change", onChange);
    } else if (!onWall && source) {
      source.close();
      source = null;
    }
    var clock = document.getElementById("clock");
    if (clock) {
      clock.textContent = new Date().toLocaleString(clock.getAttribute("data-lang") || "zh-CN",
                                                     {hour12: false, timeZone: "Asia/Shanghai"});
    }
  }
  setInterval(watch, 250);
})();
