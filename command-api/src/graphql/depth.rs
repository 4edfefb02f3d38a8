//! A query depth limit that measures introspection separately from application data.
//!
//! async-graphql's `limit_depth` counts every field, so a limit that suits application queries
//! (12) rejects the introspection query GraphiQL and code generators send (graphql-js's
//! `getIntrospectionQuery()` is 13 deep: `__schema.types.fields.args.type` + 7 `ofType`), and
//! GraphiQL cannot load the schema. Dropping the limit for introspection instead would let
//! `types { fields { type { fields { ... } } } }` grow responses without bound. So each root
//! field gets its own limit: `application` for data fields, `introspection` for `__schema` and
//! `__type`.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Name, ServerError, ServerResult, Variables};

/// The extension: add it with `SchemaBuilder::extension`.
#[derive(Debug, Clone, Copy)]
pub struct DepthLimit {
    /// Deepest nesting of fields under a data root field (the root field counts as 1).
    pub application: usize,
    /// Deepest nesting under `__schema` / `__type`.
    pub introspection: usize,
}

impl ExtensionFactory for DepthLimit {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(*self)
    }
}

#[async_trait::async_trait]
impl Extension for DepthLimit {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        self.check(&document)?;
        Ok(document)
    }
}

impl DepthLimit {
    fn check(&self, document: &ExecutableDocument) -> ServerResult<()> {
        let mut depths = Depths {
            document,
            fragments: HashMap::new(),
            visiting: Vec::new(),
        };
        for (_, operation) in document.operations.iter() {
            let mut roots = Vec::new();
            depths.root_fields(&operation.node.selection_set.node, &mut roots);
            for (name, pos, depth) in roots {
                let limit = if name.starts_with("__") && name != "__typename" {
                    self.introspection
                } else {
                    self.application
                };
                if depth > limit {
                    return Err(ServerError::new(
                        format!("Query is nested too deep (more than {limit} levels)."),
                        Some(pos),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Depth of selection sets, with each fragment's depth computed once (a document that spreads
/// fragments into fragments must not cost exponential time) and cycles cut (validation, which
/// runs after parsing, reports them).
struct Depths<'a> {
    document: &'a ExecutableDocument,
    fragments: HashMap<&'a Name, usize>,
    visiting: Vec<&'a Name>,
}

impl<'a> Depths<'a> {
    /// The root fields of an operation (through fragments), each with its depth.
    fn root_fields(
        &mut self,
        set: &'a SelectionSet,
        out: &mut Vec<(&'a str, async_graphql::Pos, usize)>,
    ) {
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => {
                    let depth = 1 + self.depth(&field.node.selection_set.node);
                    out.push((field.node.name.node.as_str(), field.pos, depth));
                }
                Selection::InlineFragment(fragment) => {
                    self.root_fields(&fragment.node.selection_set.node, out);
                }
                Selection::FragmentSpread(spread) => {
                    let name = &spread.node.fragment_name.node;
                    if self.visiting.contains(&name) {
                        continue;
                    }
                    if let Some(fragment) = self.document.fragments.get(name) {
                        self.visiting.push(name);
                        self.root_fields(&fragment.node.selection_set.node, out);
                        self.visiting.pop();
                    }
                }
            }
        }
    }

    /// How many levels of fields `set` nests (0 for an empty set).
    fn depth(&mut self, set: &'a SelectionSet) -> usize {
        let mut deepest = 0;
        for selection in &set.items {
            let depth = match &selection.node {
                Selection::Field(field) => 1 + self.depth(&field.node.selection_set.node),
                Selection::InlineFragment(fragment) => {
                    self.depth(&fragment.node.selection_set.node)
                }
                Selection::FragmentSpread(spread) => {
                    self.fragment_depth(&spread.node.fragment_name.node)
                }
            };
            deepest = deepest.max(depth);
        }
        deepest
    }

    fn fragment_depth(&mut self, name: &'a Name) -> usize {
        if let Some(depth) = self.fragments.get(name) {
            return *depth;
        }
        if self.visiting.contains(&name) {
            return 0;
        }
        let Some(fragment) = self.document.fragments.get(name) else {
            return 0;
        };
        self.visiting.push(name);
        let depth = self.depth(&fragment.node.selection_set.node);
        self.visiting.pop();
        self.fragments.insert(name, depth);
        depth
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(query: &str) -> ServerResult<()> {
        let limit = DepthLimit {
            application: 3,
            introspection: 5,
        };
        limit.check(&async_graphql::parser::parse_query(query).unwrap())
    }

    #[test]
    fn application_and_introspection_have_their_own_limits() {
        assert!(check("{ a { b { c } } }").is_ok());
        assert!(check("{ a { b { c { d } } } }").is_err());
        assert!(check("{ __schema { a { b { c { d } } } } }").is_ok());
        assert!(check("{ __schema { a { b { c { d { e } } } } } }").is_err());
        assert!(check("{ a { ...F } } fragment F on T { b { c { d } } }").is_err());
        assert!(check("{ ...R } fragment R on Q { a { b { c { d } } } }").is_err());
        assert!(check("{ a { ... on T { b { c } } } }").is_ok());
    }

    #[test]
    fn fragment_cycles_and_fan_out_terminate() {
        assert!(check("{ a { ...F } } fragment F on T { b { ...F } }").is_ok());
        // Each fragment spreads the next twice: 2^40 paths, 41 fragments.
        let mut query = String::from("{ a { ...F0 } }");
        for i in 0..40 {
            query.push_str(&format!(
                " fragment F{i} on T {{ ...F{n} ...F{n} }}",
                n = i + 1
            ));
        }
        query.push_str(" fragment F40 on T { z }");
        assert!(check(&query).is_ok());
    }
}
