//! The one GraphQL schema of `shoal dev` / `shoal serve`: query-api's queries (plus
//! command-api's dead-letter queries), command-api's mutations and query-api's subscriptions,
//! with the depth and complexity limits, at `/graphql`.
//!
//! `/graphql` routes: `POST` runs queries and mutations (single or batched); `GET` with a
//! WebSocket upgrade serves subscriptions (`graphql-transport-ws` and the legacy `graphql-ws`
//! subprotocols); a plain `GET` serves GraphiQL, whose subscriptions use the same URL.
//!
//! Limits ([`crate::http_limits`], [`crate::ws`], `docs/limits.md`): the body size, the
//! operations per batch, the complexity (a page's fields count once per element asked for),
//! and the WebSocket limits.
//!
//! The SDL is committed as `docs/schema.graphql` (`shoal schema` prints it; a test compares).

use std::sync::Arc;

use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, GraphiQLSource};
use async_graphql::parser::types::OperationType;
use async_graphql::{Data, MergedObject, Schema};
use async_graphql_axum::{GraphQLBatchRequest, GraphQLProtocol, GraphQLResponse};
use axum::extract::State;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use shoal_api::auth::{Principal, Scope};
use shoal_command_api::commands::CommandService;
use shoal_command_api::graphql::{
    DeadLettersQuery, DepthLimit, MAX_DEPTH, MAX_INTROSPECTION_DEPTH, MutationRoot,
    tag_request_errors,
};
use shoal_infra::eventlog::EventLog;
use shoal_infra::readmodel::ReadModelStore;
use shoal_query_api::graphql::{
    LiveConfig, QueryRoot, ReadContext, SubscriptionRoot, TimelineCache,
};

use crate::auth::Authenticator;
use crate::http_limits::{HttpLimits, graphql_refusal};
use crate::ws::Connections;

/// Most complex query accepted. Each field counts 1, and the fields of a page (`jobs`, `tasks`,
/// `history`) count once per element asked for (`first`, default 50): a page of 1000 jobs with
/// every field fits (about 30,000), `jobs(first: 1000) { ... history(first: 1000) { ... } }`
/// (about 1,000,000 and more) does not.
pub const MAX_COMPLEXITY: usize = 50_000;

/// The queries of the combined schema.
#[derive(Debug, Default, MergedObject)]
#[graphql(name = "Query")]
pub struct Query(QueryRoot, DeadLettersQuery);

pub type ApiSchema = Schema<Query, MutationRoot, SubscriptionRoot>;

fn builder() -> async_graphql::SchemaBuilder<Query, MutationRoot, SubscriptionRoot> {
    Schema::build(Query::default(), MutationRoot, SubscriptionRoot)
        .extension(DepthLimit {
            application: MAX_DEPTH,
            introspection: MAX_INTROSPECTION_DEPTH,
        })
        .extension(shoal_api::graphql::IntRange)
        .extension(shoal_api::graphql::ScopeCheck(scope_of))
        .limit_complexity(MAX_COMPLEXITY)
        .extension(shoal_query_api::metrics::GraphqlMetrics)
}

/// The scope each root field needs from a token (see docs/auth.md): queries and
/// subscriptions `read`; `submitJob` `submit`; cancel, retry, redrive and `setJobPriority`
/// `operate`; any other mutation `admin`.
pub fn scope_of(kind: OperationType, field: &str) -> Scope {
    match (kind, field) {
        (OperationType::Mutation, "submitJob") => Scope::Submit,
        (
            OperationType::Mutation,
            "cancelJob" | "retryFailedTasks" | "redriveDeadLetters" | "setJobPriority",
        ) => Scope::Operate,
        (OperationType::Mutation, _) => Scope::Admin,
        (OperationType::Query | OperationType::Subscription, _) => Scope::Read,
    }
}

/// The schema with what its resolvers read.
pub fn schema(
    service: CommandService,
    store: ReadModelStore,
    log: Arc<dyn EventLog>,
    live: LiveConfig,
) -> ApiSchema {
    builder()
        .data(service)
        .data(ReadContext { store, log })
        .data(TimelineCache::default())
        .data(live)
        .finish()
}

/// The SDL (needs no database).
pub fn sdl() -> String {
    builder().finish().sdl()
}

/// `/graphql` with the default limits and no tokens: see the module docs.
pub fn router(schema: ApiSchema) -> Router {
    router_with(schema, &HttpLimits::default(), None)
}

/// `/graphql` with `limits`. With `auth` (tokens required), a WebSocket must present a valid
/// token in `connection_init` (or its upgrade's `Authorization`), and every operation is
/// checked against its token's scopes.
pub fn router_with(
    schema: ApiSchema,
    limits: &HttpLimits,
    auth: Option<Arc<Authenticator>>,
) -> Router {
    let state = Endpoint {
        schema,
        auth,
        max_batch: limits.max_batch,
        connections: Connections::new(limits.ws.clone()),
    };
    Router::new()
        .route("/graphql", get(graphiql_or_websocket).post(execute))
        .route_layer(axum::middleware::from_fn_with_state(
            limits.max_request_bytes,
            crate::http_limits::limit_graphql_body,
        ))
        .with_state(state)
}

#[derive(Clone)]
struct Endpoint {
    schema: ApiSchema,
    auth: Option<Arc<Authenticator>>,
    max_batch: usize,
    connections: Connections,
}

async fn execute(
    State(endpoint): State<Endpoint>,
    principal: Option<Extension<Principal>>,
    request: GraphQLBatchRequest,
) -> Response {
    let mut request = request.into_inner();
    if let async_graphql::BatchRequest::Batch(many) = &request
        && many.len() > endpoint.max_batch
    {
        return graphql_refusal(
            axum::http::StatusCode::BAD_REQUEST,
            "BATCH_TOO_LARGE",
            format!(
                "a batched request may hold at most {} operations (--graphql-max-batch), this \
                 one holds {}",
                endpoint.max_batch,
                many.len()
            ),
        );
    }
    if let Some(Extension(principal)) = principal {
        request = request.data(principal);
    }
    let mut response = endpoint.schema.execute_batch(request).await;
    match &mut response {
        async_graphql::BatchResponse::Single(one) => tag_request_errors(&mut one.errors),
        async_graphql::BatchResponse::Batch(many) => {
            for one in many {
                tag_request_errors(&mut one.errors);
            }
        }
    }
    GraphQLResponse::from(response).into_response()
}

/// `connection_init` of a GraphQL WebSocket: with tokens required, the payload's token (or the
/// upgrade's) must be valid, else the server closes the connection (1002, with the reason); its
/// principal is then the data of every operation on the connection.
async fn connection_init(
    auth: Option<Arc<Authenticator>>,
    upgraded: Option<Principal>,
    payload: serde_json::Value,
) -> async_graphql::Result<Data> {
    let mut data = Data::default();
    let Some(auth) = auth else {
        return Ok(data);
    };
    let principal = match (
        crate::auth::connection_init_authorization(&payload),
        upgraded,
    ) {
        (Some(authorization), _) => auth.authenticate(Some(&authorization)).await,
        (None, Some(principal)) => Ok(principal),
        (None, None) => auth.authenticate(None).await,
    };
    match principal {
        Ok(principal) => {
            data.insert(principal);
            Ok(data)
        }
        Err(error) => {
            tracing::info!(%error, "GraphQL WebSocket refused at connection_init");
            Err(async_graphql::Error::new(error.to_string()))
        }
    }
}

async fn graphiql_or_websocket(
    State(endpoint): State<Endpoint>,
    principal: Option<Extension<Principal>>,
    protocol: Result<GraphQLProtocol, axum::http::StatusCode>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match (protocol, upgrade) {
        (Ok(protocol), Ok(upgrade)) => {
            let connections = &endpoint.connections;
            let Some(permit) = connections.admit() else {
                return graphql_refusal(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "TOO_MANY_CONNECTIONS",
                    format!(
                        "the server has {} WebSocket connections open, its limit \
                         (--ws-max-connections); try again later",
                        connections.limits.max_connections
                    ),
                );
            };
            let limits = connections.limits.clone();
            let schema = endpoint.schema;
            let auth = endpoint.auth;
            let upgraded = principal.map(|Extension(p)| p);
            upgrade
                .protocols(ALL_WEBSOCKET_PROTOCOLS)
                .max_message_size(limits.max_message_bytes)
                .max_frame_size(limits.max_message_bytes)
                .on_upgrade(move |socket| {
                    crate::ws::serve(socket, schema, protocol, limits, permit, move |payload| {
                        connection_init(auth, upgraded, payload)
                    })
                })
                .into_response()
        }
        _ => Html(
            GraphiQLSource::build()
                .endpoint("/graphql")
                .subscription_endpoint("/graphql")
                .finish(),
        )
        .into_response(),
    }
}
