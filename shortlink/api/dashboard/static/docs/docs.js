// Swagger UI for /v1/docs: the OpenAPI document this API serves, nothing fetched elsewhere.
(function () {
  "use strict";
  window.ui = SwaggerUIBundle({
    url: "/v1/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
  });
})();
