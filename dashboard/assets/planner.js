/* wangge planner page: Leaflet.draw events of the planner's EditControl turned into Dash props.
   A drawn shape is sent as a feature (kind polygon/rectangle/polyline) and taken off the map (the server draws the
   cells anew); edited and deleted layers are sent with their cell code, read from the layer's class name
   ("pl-cell-<15 digits>", set by dashboard/planner.py). Each event bumps action.n_actions. */
(function () {
  "use strict";
  function codeOf(layer) {
    var m = /pl-cell-(\d{15})/.exec((layer.options && layer.options.className) || "");
    return m ? m[1] : null;
  }
  function send(props, type, layerType, features) {
    var n = (props.action && props.action.n_actions) || 0;
    props.setProps({geojson: {type: "FeatureCollection", features: features},
                    action: {layer_type: layerType || "", type: type, n_actions: n + 1}});
  }
  function withCodes(layers) {
    var out = [];
    layers.eachLayer(function (l) {
      var code = codeOf(l);
      if (code) {
        var f = l.toGeoJSON();
        f.properties = {code: code};
        out.push(f);
      }
    });
    return out;
  }
  /* Leaflet.draw's texts in the page language: the planner page carries them (#pl-draw-local, from
     dashboard/planner.py); they are laid over L.drawLocal whenever Leaflet.draw reads it. */
  function localise(local) {
    var el = document.getElementById("pl-draw-local");
    if (!el || !local) { return; }
    var texts;
    try { texts = JSON.parse(el.getAttribute("data-local") || "{}"); } catch (err) { return; }
    Object.keys(texts).forEach(function (path) {
      var keys = path.split("."), o = local;
      for (var i = 0; i < keys.length - 1; i++) {
        if (typeof o[keys[i]] !== "object" || o[keys[i]] === null) { o[keys[i]] = {}; }
        o = o[keys[i]];
      }
      o[keys[keys.length - 1]] = texts[path];
    });
  }
  function hook(tries) {
    if (!window.L) {
      if (tries > 0) { setTimeout(function () { hook(tries - 1); }, 50); }
      return;
    }
    var current = window.L.drawLocal;
    Object.defineProperty(window.L, "drawLocal", {
      configurable: true,
      get: function () { localise(current); return current; },
      set: function (v) { current = v; }
    });
  }
  hook(200);

  window.wanggePlanner = {
    created: function (e, props) {
      var layer = e.layer;
      var f = layer.toGeoJSON();
      f.properties = {kind: e.layerType};
      setTimeout(function () {
        var parents = layer._eventParents || {};
        Object.keys(parents).forEach(function (k) { parents[k].removeLayer(layer); });
        if (layer._map) { layer.remove(); }
      }, 0);
      send(props, "draw:created", e.layerType, [f]);
    },
    edited: function (e, props) {
      var feats = withCodes(e.layers);
      if (feats.length) { send(props, "draw:edited", "polygon", feats); }
    },
    deleted: function (e, props) {
      var feats = withCodes(e.layers);
      if (feats.length) { send(props, "draw:deleted", "polygon", feats); }
    }
  };
})();
