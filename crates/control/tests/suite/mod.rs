//! The behaviour suite, run once per database backend.

pub mod audit;
pub mod auth;
pub mod certs;
pub mod console;
pub mod edge;
pub mod federation;
pub mod lifecycle;
pub mod tunnels;

/// Declares one `#[tokio::test]` per suite function for a backend.
#[macro_export]
macro_rules! suite_tests {
    ($backend:expr, $skip:expr) => {
        $crate::suite_tests!(@each $backend, $skip;
            tunnels::tunnel_object_and_headers, tunnels::pagination_newest_first,
            tunnels::tunnel_limit_per_org, tunnels::token_reveal_rotate_archive,
            tunnels::archived_domain_stays_taken,
            certs::certificate_lifecycle, certs::certificate_refusals_name_the_rule,
            auth::authorization_matrix, auth::expired_key_and_rate_limit,
            audit::audit_chain_detects_tampering,
            federation::federation_exchange, federation::federation_refusals,
            federation::federation_jwks_url,
            console::organization_sso_settings, console::users_roles_and_sessions,
            console::console_forms_over_http, console::audit_filters,
            edge::edge_view, edge::replicas_see_revocations, edge::replica_directory,
            lifecycle::shutdown_lets_requests_in_flight_finish,
            lifecycle::readiness_follows_the_database);
    };
    (@each $backend:expr, $skip:expr; $($m:ident :: $f:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $f() {
                if ($skip)() {
                    return;
                }
                suite::$m::$f($backend).await;
            }
        )*
    };
}
