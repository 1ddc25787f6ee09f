//! deploy/k8s/ and its instructions agree: the Ingress names the class of the controller whose
//! namespace the gateway admits, the README names what the overlays need installed, and every
//! documented apply first deletes the Jobs it would otherwise fail to replace.

use super::{OVERLAYS, build, find, of_kind, selects};
use crate::deploy::read;

/// The namespace each ingress controller's own manifests install it in, by the IngressClass
/// they create.
const INGRESS_CONTROLLERS: [(&str, &str); 1] = [("nginx", "ingress-nginx")];

/// The README's "Run on Kubernetes" section.
fn readme_kubernetes() -> String {
    let readme = read("README.md");
    let section = readme
        .split("\n## Run on Kubernetes\n")
        .nth(1)
        .expect("README.md, ## Run on Kubernetes");
    section.split("\n## ").next().unwrap().to_owned()
}

#[test]
fn the_ingress_names_the_class_whose_controller_the_gateway_admits() {
    let readme = readme_kubernetes();
    for overlay in OVERLAYS {
        let Some(objects) = build(&format!("overlays/{overlay}")) else {
            return;
        };
        let ingress = of_kind(&objects, "Ingress").next().unwrap();
        let class = ingress["spec"]["ingressClassName"]
            .as_str()
            .unwrap_or_else(|| {
                panic!(
                    "{overlay}: no ingressClassName: whichever controller is the default serves it"
                )
            });
        let namespace = INGRESS_CONTROLLERS
            .iter()
            .find(|(name, _)| *name == class)
            .unwrap_or_else(|| panic!("{class}: which namespace does its controller run in?"))
            .1;
        let gateway =
            &find(&objects, "Deployment", "gateway")["spec"]["template"]["metadata"]["labels"];
        let admitted = of_kind(&objects, "NetworkPolicy")
            .filter(|p| selects(&p["spec"]["podSelector"], gateway))
            .flat_map(|p| p["spec"]["ingress"].as_array().into_iter().flatten())
            .filter(|rule| {
                rule["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["port"] == 8080)
            })
            .flat_map(|rule| rule["from"].as_array().unwrap())
            .any(|peer| {
                peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == namespace
            });
        assert!(
            admitted,
            "{overlay}: the gateway does not admit {namespace}, where {class} runs"
        );
        assert!(
            readme.contains(namespace),
            "README: the controller's namespace {namespace}"
        );

        // An autoscaler scales on nothing without the resource metrics API.
        if of_kind(&objects, "HorizontalPodAutoscaler")
            .next()
            .is_some()
        {
            assert!(
                readme.contains("metrics-server"),
                "README: {overlay} needs metrics-server"
            );
        }
    }
}

/// The documents that show how to apply an overlay.
const INSTRUCTIONS: [&str; 6] = [
    "README.md",
    "deploy/k8s/README.md",
    "deploy/k8s/overlays/dev/kustomization.yaml",
    "deploy/k8s/overlays/prod/kustomization.yaml",
    "deploy/k8s/overlays/dev/stack-check/kustomization.yaml",
    "deploy/k8s/overlays/prod/stack-check/kustomization.yaml",
];

#[test]
fn every_documented_apply_first_deletes_the_jobs_it_builds() {
    let mut applies = 0;
    for document in INSTRUCTIONS {
        let text = read(document);
        let lines: Vec<&str> = text.lines().collect();
        for (at, line) in lines.iter().enumerate() {
            let Some(rest) = line.split("kubectl kustomize").nth(1) else {
                continue;
            };
            let Some(overlay) = rest
                .split_whitespace()
                .find_map(|word| word.strip_prefix("deploy/k8s/overlays/"))
            else {
                continue;
            };
            let Some(objects) = build(&format!("overlays/{overlay}")) else {
                return;
            };
            // A Job's pod template cannot change: applying a changed one fails while the Job
            // exists, and applying an unchanged one does not run it again.
            let before = lines[at.saturating_sub(3)..at].join("\n");
            for job in of_kind(&objects, "Job") {
                let name = job["metadata"]["name"].as_str().unwrap();
                assert!(
                    before.contains(&format!("delete job {name} --ignore-not-found")),
                    "{document}:{}: applies {overlay} without deleting job {name} first",
                    at + 1
                );
            }
            applies += 1;
        }
    }
    assert!(applies >= 5, "{applies} applies found");
}
