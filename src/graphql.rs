//! The one GraphQL schema of `shoal dev` / `shoal serve`: query-api's queries (plus
//! command-api's dead-letter queries), command-api's mutations and query-api's subscriptions,
//! with the depth and complexity limits, at `/graphql`.
//!
//! `/graphql` routes: `POST` runs queries and mutations (single or batched); `GET` with a
//! WebSocket upgrade serves subscriptions (`graphql-transport-ws` and the legacy `graphql-ws`
//! subprotocols); a plain `GET` serves GraphiQL, whose subscriptions use the same URL.
//!
//! The SDL is committed as `docs/schema.graphql` (`shoal schema` prints it; a test compares).

use std::sync::Arc;

use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, GraphiQLSource};
use async_graphql::{MergedObject, Schema};
use async_graphql_axum::{GraphQLBatchRequest, GraphQLProtocol, GraphQLResponse, GraphQLWebSocket};
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

/// Most complex query accepted: each field counts 1, so a page of 50 jobs with 10 fields
/// each fits, and a page of 1000 with every field does not.
pub const MAX_COMPLEXITY: usize = 2000;

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

/// `/graphql`: see the module docs.
pub fn router(schema: ApiSchema) -> Router {
    Router::new()
        .route("/graphql", get(graphiql_or_websocket).post(execute))
        .with_state(schema)
}

async fn execute(State(schema): State<ApiSchema>, request: GraphQLBatchRequest) -> GraphQLResponse {
    let mut response = schema.execute_batch(request.into_inner()).await;
    match &mut response {
        async_graphql::BatchResponse::Single(one) => tag_request_errors(&mut one.errors),
        async_graphql::BatchResponse::Batch(many) => {
            for one in many {
                tag_request_errors(&mut one.errors);
            }
        }
    }
    response.into()
}

async fn graphiql_or_websocket(
    State(schema): State<ApiSchema>,
    protocol: Result<GraphQLProtocol, axum::http::StatusCode>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match (protocol, upgrade) {
        (Ok(protocol), Ok(upgrade)) => upgrade
            .protocols(ALL_WEBSOCKET_PROTOCOLS)
            .on_upgrade(move |stream| GraphQLWebSocket::new(stream, schema, protocol).serve())
            .into_response(),
        _ => Html(
            GraphiQLSource::build()
                .endpoint("/graphql")
                .subscription_endpoint("/graphql")
                .finish(),
        )
        .into_response(),
    }
}
