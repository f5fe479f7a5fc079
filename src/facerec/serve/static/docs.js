// facerec serve's /docs page: Swagger UI (served by this server from the pinned
// swagger-ui-bundle-v2 package, never from a CDN) on the server's OpenAPI document. A static
// file rather than an inline script: the pages' Content-Security-Policy allows scripts from
// this server only.
"use strict";

window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null,   // no badge fetched from a third-party validator
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
