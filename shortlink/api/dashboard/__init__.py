"""The campaign dashboard and the API docs: pages served by the API process.

`routes.setup` registers them: the static files (vendored uPlot and Swagger UI
with their licences, the dashboard's own script and style) and `/v1/docs`
always; the dashboard pages under `/dashboard/` when DASHBOARD_ENABLED is set.
See docs/dashboard.md.
"""
