// The dashboard's only script: draws the clicks-over-time charts with uPlot from the
// JSON the page carries, and reloads a live campaign's page every few seconds.
(function () {
  "use strict";
  var charts = {};
  window.shortlinkCharts = charts;

  var refresh = Number(document.body.dataset.refreshSeconds || 0);
  if (refresh > 0) {
    window.setTimeout(function () { window.location.reload(); }, refresh * 1000);
  }

  var source = document.getElementById("series-data");
  if (!source || typeof uPlot === "undefined") {
    document.documentElement.dataset.chartsReady = "true";
    return;
  }
  var data = JSON.parse(source.textContent);
  var utc = function (seconds) { return uPlot.tzDate(new Date(seconds * 1000), "Etc/UTC"); };

  function options(width) {
    return {
      width: width,
      height: 240,
      tzDate: utc,
      scales: { x: { time: true } },
      series: [
        { label: "UTC" },
        { label: "taps", stroke: "#1f6feb", width: 2 },
        { label: "first taps", stroke: "#2da44e", width: 2 },
        { label: "bot taps", stroke: "#8c959f", width: 1, dash: [4, 4] },
      ],
      axes: [{}, { label: "taps" }],
    };
  }

  function draw(id, columns) {
    var element = document.getElementById(id);
    if (!element || !columns[0].length) { return; }
    var chart = new uPlot(options(element.clientWidth || 800), columns, element);
    element.dataset.points = String(columns[0].length);
    charts[id] = chart;
  }

  draw("chart-minutes", data.minutes);
  draw("chart-hours", data.hours);
  window.addEventListener("resize", function () {
    Object.keys(charts).forEach(function (id) {
      var element = document.getElementById(id);
      charts[id].setSize({ width: element.clientWidth || 800, height: 240 });
    });
  });
  document.documentElement.dataset.chartsReady = "true";
})();
