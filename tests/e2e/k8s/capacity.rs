//! deploy/k8s/ and its capacity figures agree (deploy/k8s/CAPACITY.md): every service's
//! autoscaler may reach one and a half times the pods that 1,000 orders/s need at its CPU
//! request, by the CPU an order costs as the README's load bench measured it; and the
//! PostgreSQL pools of every pod a database server may see at once fit under its
//! `max_connections`.

use std::collections::BTreeMap;

use ordertrail_shared::db::{DbSystem, MAX_CONNECTIONS_VARIABLE, pool_size};
use serde_json::Value;

use super::{OVERLAYS, PORTS, build, container, environment, find, of_kind};
use crate::deploy::read;

/// The rate the prod overlay is sized for.
const ORDERS_PER_SECOND: f64 = 1_000.0;

/// PostgreSQL's `superuser_reserved_connections`: slots ordinary users never get.
const SUPERUSER_RESERVED: u64 = 3;

/// PostgreSQL's `max_connections` when nothing sets it.
const POSTGRES_DEFAULT_MAX_CONNECTIONS: u64 = 100;

/// A Kubernetes CPU quantity (`250m`, `"1"`) in millicores.
fn millicores(quantity: &str) -> f64 {
    match quantity.strip_suffix('m') {
        Some(milli) => milli.parse().unwrap(),
        None => quantity.parse::<f64>().unwrap() * 1000.0,
    }
}

/// CPU µs per captured order of each service, with PostgreSQL and telemetry on: the README's
/// "What an order costs" table, which CAPACITY.md takes its [R] figures from.
fn cpu_per_order() -> BTreeMap<String, f64> {
    let readme = read("README.md");
    let mut lines = readme
        .lines()
        .skip_while(|l| !l.starts_with("| database | telemetry |"));
    let cells = |line: &str| -> Vec<String> {
        line.trim_matches('|')
            .split('|')
            .map(|cell| cell.trim().to_owned())
            .collect()
    };
    let header = cells(lines.next().expect("README: the load bench's table"));
    let row = lines
        .map(cells)
        .find(|row| row[..3] == ["postgresql", "on", "POST /api/orders"])
        .expect("README: the bench's row for orders on PostgreSQL, telemetry on");
    PORTS
        .iter()
        .map(|(role, _)| {
            let column = header.iter().position(|h| h == role).unwrap();
            ((*role).to_owned(), row[column].parse().unwrap())
        })
        .collect()
}

/// The HorizontalPodAutoscaler that scales the Deployment `name`, if any.
fn autoscaler<'a>(objects: &'a [Value], name: &str) -> Option<&'a Value> {
    of_kind(objects, "HorizontalPodAutoscaler").find(|hpa| {
        hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
            && hpa["spec"]["scaleTargetRef"]["name"] == name
    })
}

#[test]
fn autoscalers_reach_one_and_a_half_times_the_pods_for_a_thousand_orders_a_second() {
    let cpu = cpu_per_order();
    let Some(objects) = build("overlays/prod") else {
        return;
    };
    for (role, _) in PORTS {
        let deployment = find(&objects, "Deployment", role);
        let request = millicores(
            container(deployment)["resources"]["requests"]["cpu"]
                .as_str()
                .unwrap(),
        );
        let hpa = autoscaler(&objects, role).unwrap_or_else(|| panic!("prod scales {role}"));
        let metric = &hpa["spec"]["metrics"][0]["resource"];
        assert_eq!(metric["name"], "cpu");
        let target = metric["target"]["averageUtilization"].as_f64().unwrap() / 100.0;
        // Millicores the rate needs, over what a pod uses before the autoscaler adds one.
        let needed = (ORDERS_PER_SECOND * cpu[role] / 1000.0 / (target * request)).ceil();
        let most = hpa["spec"]["maxReplicas"].as_f64().unwrap();
        assert!(
            most >= (1.5 * needed).ceil(),
            "{role}: {needed} pods of {request}m carry {ORDERS_PER_SECOND} orders/s at \
             {cpu} µs an order, and maxReplicas is {most}",
            cpu = cpu[role]
        );
    }
}

/// The most pods of a Deployment that may hold connections at once: its autoscaler's
/// maxReplicas (or its replicas), one more surged by a rollout, and one still draining.
fn most_pods(objects: &[Value], deployment: &Value) -> u64 {
    let name = deployment["metadata"]["name"].as_str().unwrap();
    let replicas = match autoscaler(objects, name) {
        Some(hpa) => hpa["spec"]["maxReplicas"].as_u64().unwrap(),
        None => deployment["spec"]["replicas"].as_u64().unwrap_or(1),
    };
    let surge = deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
        .as_u64()
        .expect("a maxSurge in pods, so that this sum is exact");
    replicas + surge + 1
}

/// The database server a role's `DATABASE_URL` leads to, and its `max_connections`.
fn server_of(objects: &[Value], container: &Value) -> (String, u64) {
    let secret = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "DATABASE_URL")
        .unwrap()["valueFrom"]["secretKeyRef"]["name"]
        .as_str()
        .unwrap();
    match objects
        .iter()
        .find(|o| o["kind"] == "Secret" && o["metadata"]["name"] == secret)
    {
        // dev: one plain PostgreSQL for every database, with the server's default.
        Some(secret) => {
            let (host, port) = super::host_port(secret["stringData"]["uri"].as_str().unwrap());
            let (server, _) = super::telemetry::behind(objects, host, port)[0];
            let args = super::strings(&container_of(server)["args"]).join(" ");
            assert!(
                !args.contains("max_connections"),
                "read {host}'s max_connections here"
            );
            (host.to_owned(), POSTGRES_DEFAULT_MAX_CONNECTIONS)
        }
        // prod: CloudNativePG's <cluster>-app.
        None => {
            let name = secret.strip_suffix("-app").unwrap();
            let cluster = find(objects, "Cluster", name);
            let most = cluster["spec"]["postgresql"]["parameters"]["max_connections"]
                .as_str()
                .map_or(POSTGRES_DEFAULT_MAX_CONNECTIONS, |v| v.parse().unwrap());
            (name.to_owned(), most)
        }
    }
}

/// The first container of a workload, whatever their number.
fn container_of(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]["containers"][0]
}

#[test]
fn the_pools_of_every_pod_a_database_may_see_fit_under_its_max_connections() {
    for overlay in OVERLAYS {
        let Some(objects) = build(&format!("overlays/{overlay}")) else {
            return;
        };
        let mut servers: BTreeMap<String, (u64, u64, Vec<String>)> = BTreeMap::new();
        for (role, _) in PORTS {
            let deployment = find(&objects, "Deployment", role);
            let container = container(deployment);
            let environment = environment(&objects, container);
            if !environment.contains_key("DATABASE_URL") {
                continue;
            }
            let value = environment.get(MAX_CONNECTIONS_VARIABLE).cloned().flatten();
            let (pool, warning) = pool_size(DbSystem::Postgresql, value.as_deref());
            assert_eq!(warning, None, "{overlay} {role}");
            let pods = most_pods(&objects, deployment);
            let (server, most) = server_of(&objects, container);
            let entry = servers.entry(server).or_insert((most, 0, Vec::new()));
            entry.1 += pods * u64::from(pool);
            entry.2.push(format!("{role}: {pods} pods x {pool}"));
        }
        assert!(!servers.is_empty(), "{overlay}: no service has a database");
        for (server, (most, pooled, sum)) in servers {
            assert!(
                pooled + SUPERUSER_RESERVED <= most,
                "{overlay} {server}: {sum:?} + {SUPERUSER_RESERVED} reserved > max_connections \
                 {most}: a pod past it is refused connections"
            );
        }
    }
}
