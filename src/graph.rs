//! The dependency graph of locals and resources, built from references and
//! `depends_on`; cycles are reported with every member and where each edge
//! comes from. Also renders the graph as DOT for `berth graph`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};

use crate::config::Config;
use crate::diag::{Diagnostic, Diagnostics};

/// Locals and resources in dependency order.
#[derive(Debug)]
pub struct Graph {
    /// Node names (`local.x`, `TYPE.NAME`) in an order where every node
    /// comes after what it depends on.
    pub order: Vec<String>,
    /// For each node, the nodes it depends on directly.
    pub deps: BTreeMap<String, BTreeSet<String>>,
}

impl Graph {
    /// Builds the graph of `config`, or reports every cycle.
    pub fn build(config: &Config) -> Result<Self, Diagnostics> {
        let mut graph: DiGraph<String, Range<usize>> = DiGraph::new();
        let mut index: BTreeMap<String, NodeIndex> = BTreeMap::new();
        for l in &config.locals {
            let name = format!("local.{}", l.name);
            index.insert(name.clone(), graph.add_node(name));
        }
        for r in &config.resources {
            let name = r.address();
            index.insert(name.clone(), graph.add_node(name));
        }
        let mut deps: BTreeMap<String, BTreeSet<String>> =
            index.keys().map(|k| (k.clone(), BTreeSet::new())).collect();
        let mut add = |from: &str,
                       to: &str,
                       span: Range<usize>,
                       graph: &mut DiGraph<String, Range<usize>>| {
            if let (Some(&a), Some(&b)) = (index.get(from), index.get(to)) {
                // Edge from dependency to dependent.
                graph.add_edge(b, a, span);
                deps.entry(from.to_owned())
                    .or_default()
                    .insert(to.to_owned());
            }
        };
        for l in &config.locals {
            let from = format!("local.{}", l.name);
            for r in &l.value.refs {
                if let Some(node) = r.target.node() {
                    add(&from, &node, r.span.clone(), &mut graph);
                }
            }
        }
        for res in &config.resources {
            let from = res.address();
            for r in res.body.refs() {
                if let Some(node) = r.target.node() {
                    add(&from, &node, r.span.clone(), &mut graph);
                }
            }
            for (dep, span) in &res.depends_on {
                add(&from, dep, span.clone(), &mut graph);
            }
        }

        match toposort(&graph, None) {
            Ok(order) => Ok(Self {
                order: order.into_iter().map(|i| graph[i].clone()).collect(),
                deps,
            }),
            Err(_) => {
                let mut diags = Diagnostics::default();
                for scc in tarjan_scc(&graph) {
                    let is_cycle = scc.len() > 1
                        || scc
                            .first()
                            .is_some_and(|&n| graph.find_edge(n, n).is_some());
                    if !is_cycle {
                        continue;
                    }
                    diags.push(cycle_diagnostic(config, &graph, &scc));
                }
                Err(diags)
            }
        }
    }

    /// DOT text for `berth graph`.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph berth {\n  rankdir = \"RL\";\n");
        for node in &self.order {
            out.push_str(&format!("  \"{node}\";\n"));
        }
        for (from, tos) in &self.deps {
            for to in tos {
                out.push_str(&format!("  \"{from}\" -> \"{to}\";\n"));
            }
        }
        out.push_str("}\n");
        out
    }
}

fn cycle_diagnostic(
    config: &Config,
    graph: &DiGraph<String, Range<usize>>,
    scc: &[NodeIndex],
) -> Diagnostic {
    // Walk the cycle in dependency order starting from the first member
    // that appears in the file, so the message is stable.
    let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
    let mut names: Vec<String> = Vec::new();
    let mut spans: Vec<Range<usize>> = Vec::new();
    let Some(&start) = scc.iter().min_by_key(|&&n| graph[n].clone()) else {
        return Diagnostic::bare("dependency cycle");
    };
    let mut current = start;
    loop {
        names.push(graph[current].clone());
        // Edges go dependency -> dependent; follow dependents within the cycle.
        let next = graph
            .edges_directed(current, petgraph::Direction::Incoming)
            .find(|e| members.contains(&petgraph::visit::EdgeRef::source(e)));
        match next {
            Some(edge) => {
                spans.push(edge.weight().clone());
                current = petgraph::visit::EdgeRef::source(&edge);
            }
            None => break,
        }
        if current == start || names.len() > scc.len() {
            break;
        }
    }
    names.push(graph[start].clone());
    let span = spans.first().cloned().unwrap_or(0..0);
    config
        .error(span, format!("dependency cycle: {}", names.join(" -> ")))
        .with_label("this reference closes the cycle")
        .with_help("break the cycle by removing one of these references")
}
