//! The OpenAPI 3 document, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::envelope::ErrorEnvelope;
use super::{jobs, routes};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "dynplugd REST API", description = "Plugins loaded by dynplugd, over HTTP. Every response is an envelope {success, data, error}; failures add a machine-readable code."),
    paths(routes::list, routes::info, routes::execute, routes::enable, routes::disable, routes::health, routes::metrics, routes::openapi, jobs::start, jobs::list, jobs::get, jobs::cancel, jobs::events),
    components(schemas(ErrorEnvelope, routes::PluginView, routes::WasmView, routes::ExecuteRequest, routes::ExecuteResponse, routes::ToggleResponse, routes::Health, jobs::JobInfo)),
    modifiers(&BearerAuth),
    tags((name = "plugins", description = "List, inspect, run, enable and disable plugins"),
         (name = "jobs", description = "Background calls with progress and cancellation, and the event stream"),
         (name = "daemon", description = "Health, metrics and this document"))
)]
struct ApiDoc;

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}
