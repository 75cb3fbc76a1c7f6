// The dashboard's own script: draws the charts that the live parts describe, keeps them
// drawn across htmx swaps and window resizes, and tells people when the hub stops answering.
// The pages work without it: every figure is also in the HTML.
(function () {
  "use strict";

  var COLOURS = ["#1f6f43", "#b3261e", "#1d4f91", "#8a5a00"];
  // Epochs are whole numbers: no tick at epoch 2.5.
  var WHOLE = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000];

  function whole(u, ticks) {
    return ticks.map(function (t) { return String(Math.round(t)); });
  }

  function compact(u, ticks) {
    return ticks.map(function (t) {
      var a = Math.abs(t);
      if (a >= 1e9) return (t / 1e9).toFixed(1).replace(/\.0$/, "") + "G";
      if (a >= 1e6) return (t / 1e6).toFixed(1).replace(/\.0$/, "") + "M";
      if (a >= 1e4) return (t / 1e3).toFixed(0) + "k";
      return String(Math.round(t * 100) / 100);
    });
  }

  function chartOptions(spec, width) {
    var unit = spec.unit || "";
    var byTime = spec.x_label === "time";
    var series = [{ label: spec.x_label }];
    spec.series.forEach(function (s, i) {
      series.push({
        label: s.label,
        stroke: COLOURS[i % COLOURS.length],
        width: 2,
        dash: i === 0 ? undefined : [6, 4],
        points: { show: spec.x.length < 60 },
        value: function (u, v) {
          if (v == null) return "–";
          return (unit === "%" ? v.toFixed(1) : v.toLocaleString()) + (unit ? " " + unit : "");
        },
      });
    });
    var y = { auto: true };
    if (unit === "%") y = { auto: false, range: [0, 100] };
    return {
      width: width,
      height: width < 500 ? 180 : 240,
      scales: { x: { time: byTime }, y: y },
      axes: [
        byTime
          ? { stroke: "#333" }
          : { label: spec.x_label, stroke: "#333", incrs: WHOLE, values: whole },
        { label: unit, stroke: "#333", size: 64, values: compact },
      ],
      series: series,
      legend: { live: true },
    };
  }

  function draw(el) {
    if (el._plot || !window.uPlot) return;
    var spec = JSON.parse(el.getAttribute("data-chart"));
    var data = [spec.x].concat(spec.series.map(function (s) { return s.values; }));
    el._plot = new uPlot(chartOptions(spec, Math.max(el.clientWidth, 200)), data, el);
  }

  function drawAll(root) {
    (root || document).querySelectorAll("[data-chart]").forEach(draw);
  }

  function destroyAll(root) {
    root.querySelectorAll("[data-chart]").forEach(function (el) {
      if (el._plot) { el._plot.destroy(); el._plot = null; }
    });
  }

  var resizing = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizing);
    resizing = setTimeout(function () {
      document.querySelectorAll("[data-chart]").forEach(function (el) {
        if (el._plot) el._plot.setSize({ width: Math.max(el.clientWidth, 200), height: el._plot.height });
      });
    }, 150);
  });

  document.addEventListener("DOMContentLoaded", function () {
    drawAll(document);
    var contact = document.getElementById("contact");
    document.body.addEventListener("htmx:beforeSwap", function (event) {
      // A live part that says the database is away, or that a page is gone, replaces the
      // stale figures: people should see it, and it keeps polling, so it recovers by itself.
      var status = event.detail.xhr.status;
      if (status === 503 || status === 404 || status === 400) {
        event.detail.shouldSwap = true;
        event.detail.isError = false;
      }
      if (event.detail.shouldSwap && event.detail.target) destroyAll(event.detail.target);
    });
    document.body.addEventListener("htmx:afterSettle", function (event) {
      drawAll(event.detail.elt && event.detail.elt.isConnected ? event.detail.elt.parentNode : document);
    });
    document.body.addEventListener("htmx:sendError", function () {
      if (contact) contact.hidden = false;
    });
    document.body.addEventListener("htmx:afterRequest", function (event) {
      if (contact && event.detail.xhr && event.detail.xhr.status) contact.hidden = true;
    });
  });
})();
