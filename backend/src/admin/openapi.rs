//! The finishing touches on the generated OpenAPI document: the error answers every operation
//! can give (so a client generated from the document knows them), and how to authenticate.

use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr};

use super::auth::SESSION_COOKIE;

/// Status codes any admin operation may answer with an `ErrorBody`, and why.
const COMMON_ERRORS: &[(&str, &str)] = &[
    (
        "400",
        "Malformed request: bad JSON, wrong types, unknown fields, a bad query or path",
    ),
    ("401", "No valid session or API key"),
    (
        "403",
        "The role may not do this, or a session change lacks its X-CSRF-Token",
    ),
    ("404", "No such thing"),
    ("405", "Method not allowed"),
    (
        "408",
        "The body did not arrive within admin.body_read_timeout_ms",
    ),
    ("413", "Body larger than admin.body_bytes_max"),
    ("415", "The body is not JSON"),
    ("422", "A value is well-formed but not allowed"),
    ("429", "Too many failed logins: wait retry_after_ms"),
    ("500", "Unexpected failure (logged by the server)"),
    (
        "503",
        "The server cannot do it now (the store refuses writes): retry after retry_after_ms",
    ),
];

/// Security scheme names in the document.
pub const BEARER: &str = "api_key";
pub const COOKIE: &str = "session";

pub fn finish(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.security_schemes.insert(
        BEARER.into(),
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An API key: `ringchat admin add-key` or POST /api/keys",
                ))
                .build(),
        ),
    );
    components.security_schemes.insert(
        COOKIE.into(),
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            SESSION_COOKIE,
            "The dashboard's session (POST /api/session); changes also need X-CSRF-Token",
        ))),
    );
    for (path, item) in doc.paths.paths.iter_mut() {
        let login = path == "/api/session";
        if let Some(op) = &mut item.post
            && !login
        {
            require_auth(op);
        }
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            require_auth(op);
        }
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            add_errors(op);
        }
    }
}

/// Either an API key or a session (everything but logging in).
fn require_auth(op: &mut Operation) {
    op.security.get_or_insert_with(|| {
        vec![
            SecurityRequirement::new(BEARER, Vec::<String>::new()),
            SecurityRequirement::new(COOKIE, Vec::<String>::new()),
        ]
    });
}

fn add_errors(op: &mut Operation) {
    for (status, why) in COMMON_ERRORS {
        op.responses
            .responses
            .entry((*status).to_owned())
            .or_insert_with(|| {
                RefOr::T(
                    ResponseBuilder::new()
                        .description(*why)
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("ErrorBody")))
                                .build(),
                        )
                        .build(),
                )
            });
    }
}
