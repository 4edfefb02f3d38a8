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
use async_graphql::{MergedObject, Schema};
use async_graphql_axum::{GraphQLBatchRequest, GraphQLProtocol, GraphQLResponse};
use axum::Router;
use axum::extract::State;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use shoal_command_api::commands::CommandService;
use shoal_command_api::graphql::{
    DeadLettersQuery, DepthLimit, MAX_DEPTH, MAX_INTROSPECTION_DEPTH, MutationRoot,
    tag_request_errors,
};
use shoal_infra::eventlog::EventLog;
use shoal_infra::readmodel::ReadModelStore;
use shoal_query_api::graphql::{LiveConfig, QueryRoot, ReadContext, SubscriptionRoot};

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
        .limit_complexity(MAX_COMPLEXITY)
        .extension(shoal_query_api::metrics::GraphqlMetrics)
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
        .data(live)
        .finish()
}

/// The SDL (needs no database).
pub fn sdl() -> String {
    builder().finish().sdl()
}

/// `/graphql` with the default limits: see the module docs.
pub fn router(schema: ApiSchema) -> Router {
    router_with(schema, &HttpLimits::default())
}

/// `/graphql` with `limits`.
pub fn router_with(schema: ApiSchema, limits: &HttpLimits) -> Router {
    let state = Endpoint {
        schema,
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
    max_batch: usize,
    connections: Connections,
}

async fn execute(State(endpoint): State<Endpoint>, request: GraphQLBatchRequest) -> Response {
    let request = request.into_inner();
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

async fn graphiql_or_websocket(
    State(endpoint): State<Endpoint>,
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
            upgrade
                .protocols(ALL_WEBSOCKET_PROTOCOLS)
                .max_message_size(limits.max_message_bytes)
                .max_frame_size(limits.max_message_bytes)
                .on_upgrade(move |socket| {
                    crate::ws::serve(socket, schema, protocol, limits, permit)
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
