//! JSON Schema (draft 2020-12) of the fleet spec, for editors (`phoenix schema`). YAML language
//! servers use it for completion and checking; Phoenix's own validation is stricter (references,
//! cycles, substitutions) and is what counts.

use serde_json::{Value, json};

fn quantity(description: &str, pattern: &str) -> Value {
    json!({
        "description": description,
        "anyOf": [
            { "type": "number", "minimum": 0 },
            { "type": "string", "pattern": pattern }
        ]
    })
}

fn resources(description: &str) -> Value {
    json!({
        "type": "object",
        "description": description,
        "additionalProperties": false,
        "properties": {
            "cpu": quantity("Cores: `4`, `1.5`, `500m`, or a range `8-16`.", r"^\s*[0-9.]+m?\s*(-\s*[0-9.]+m?\s*)?$"),
            "memory": quantity("Bytes with K M G T P (decimal) or Ki Mi Gi Ti Pi (binary); ranges `64-128Gi`.", BYTES),
            "storage": quantity("Bytes with K M G T P (decimal) or Ki Mi Gi Ti Pi (binary); ranges `2-4T`.", BYTES)
        }
    })
}

const BYTES: &str = r"^\s*[0-9.]+\s*([KMGTP]i?B?)?\s*(-\s*[0-9.]+\s*([KMGTP]i?B?)?\s*)?$";
const NAME: &str = "^[a-z0-9][a-z0-9_-]*$";
const TIME: &str = r"^[0-9.]+(ms|s|m|h)$";

/// The JSON Schema of format 1 with Phoenix's extensions.
pub fn json_schema() -> Value {
    let name = json!({ "type": "string", "pattern": NAME });
    let names = json!({ "type": "array", "items": { "type": "string" } });
    let count = json!({ "anyOf": [ { "type": "integer", "minimum": 0 }, { "type": "string", "pattern": r"^[0-9]+(-[0-9]+)?$" } ] });
    let site = json!({
        "type": "object", "additionalProperties": false, "required": ["name", "tier", "capacity"],
        "properties": {
            "name": name, "tier": { "enum": ["core", "regional", "edge"] },
            "region": { "type": "string" },
            "provider": { "enum": ["local", "docker", "ssh", "kubernetes", "proxmox"], "default": "local" },
            "hosts": { "type": "integer", "minimum": 1, "default": 1 },
            "docker": {
                "type": "object", "additionalProperties": false,
                "description": "Docker Engine endpoints, one per host (default DOCKER_HOST, else the local socket)",
                "properties": { "endpoints": { "type": "array", "items": { "type": "string" } } }
            },
            "ssh": {
                "type": "object", "additionalProperties": false, "required": ["hosts"],
                "description": "SSH hosts, one per host; the system's OpenSSH client and config apply",
                "properties": {
                    "hosts": { "type": "array", "items": { "type": "string" }, "minItems": 1 },
                    "port": { "type": "integer", "minimum": 1, "maximum": 65535 },
                    "identity": { "type": "string" }
                }
            },
            "capacity": resources("Capacity of each host."),
            "count": { "type": "integer", "minimum": 1, "description": "A group of identical sites NAME-1 ... NAME-count." },
            "phase": { "type": "integer", "minimum": 1, "default": 1, "description": "Phase in which the site comes online." },
            "description": { "type": "string" }
        }
    });
    let project = json!({
        "type": "object", "additionalProperties": false, "required": ["name"],
        "properties": {
            "name": name, "depends_on": names, "hosted_on": { "type": "string" },
            "duration": { "type": "string", "pattern": r"^[0-9.]+[hdw]?(-[0-9.]+[hdw])?$", "description": "`3d`, `2-3w`." },
            "budget": resources("Totals the source document states; the plan reports any mismatch."),
            "description": { "type": "string" }
        }
    });
    let json_check = json!({
        "type": "object", "additionalProperties": false, "required": ["url", "expect"],
        "properties": {
            "url": { "type": "string" },
            "expect": { "type": "object", "minProperties": 1, "additionalProperties": { "type": ["string", "number", "boolean"] } }
        }
    });
    let health = json!({
        "type": "object", "additionalProperties": false,
        "anyOf": [
            { "required": ["http"] }, { "required": ["tcp"] }, { "required": ["command"] },
            { "required": ["json"] }, { "required": ["metrics"] }, { "required": ["ledger"] }
        ],
        "properties": {
            "http": { "type": "string" }, "expect_status": { "type": "integer", "default": 200 },
            "tcp": { "type": "string" }, "command": { "type": "array", "items": { "type": "string" } },
            "json": {
                "description": "HTTP GETs answering 200 with a JSON document holding these values (dotted paths)",
                "oneOf": [ json_check.clone(), { "type": "array", "items": json_check } ]
            },
            "metrics": {
                "description": "a Prometheus exposition with at least min_families metric families",
                "oneOf": [
                    { "type": "string" },
                    {
                        "type": "object", "additionalProperties": false, "required": ["url"],
                        "properties": {
                            "url": { "type": "string" },
                            "min_families": { "type": "integer", "minimum": 0, "default": 1 }
                        }
                    }
                ]
            },
            "ledger": {
                "description": "a ledger node: finalized height advances within advance_within, at least min_peers live peers, at most max_lag blocks behind the network",
                "type": "object", "additionalProperties": false, "required": ["api"],
                "properties": {
                    "api": { "type": "string" },
                    "min_peers": { "type": "integer", "minimum": 0, "default": 0 },
                    "max_lag": { "type": "integer", "minimum": 0, "default": 10 },
                    "advance_within": { "type": "string", "pattern": TIME, "default": "3s" }
                }
            },
            "timeout": { "type": "string", "pattern": TIME, "default": "30s" },
            "interval": { "type": "string", "pattern": TIME, "default": "500ms" }
        }
    });
    let service = json!({
        "type": "object", "additionalProperties": false, "required": ["name"],
        "properties": {
            "name": name, "project": { "type": "string" },
            "phase": { "type": "integer", "minimum": 1, "default": 1 },
            "role": { "enum": ["app", "validator", "replica", "light"], "default": "app" },
            "validator_set": { "type": "string", "pattern": NAME, "description": "Validators: the BFT set this service's validators join (default: a set of their own). Services naming one set form one set, judged as it stands at each phase." },
            "replicas": count,
            "placement": {
                "type": "object", "additionalProperties": false,
                "properties": {
                    "tier": { "enum": ["core", "regional", "edge"] }, "sites": names,
                    "spread": { "enum": ["site", "host", "none"], "default": "none" }
                }
            },
            "resources": resources("Per instance."),
            "command": { "type": "array", "items": { "type": "string" } },
            "env": { "type": "object", "additionalProperties": { "type": "string" } },
            "ports": names, "health": health, "depends_on": names,
            "enabled": { "type": "boolean", "default": true },
            "rollout": {
                "type": "object", "additionalProperties": false, "required": ["strategy"],
                "properties": {
                    "strategy": { "enum": ["rolling", "blue-green", "canary"] },
                    "max_unavailable": { "type": "integer", "minimum": 0 },
                    "max_surge": { "type": "integer", "minimum": 0 },
                    "canary": { "type": "integer", "minimum": 1 },
                    "analysis": { "type": "string", "pattern": TIME }
                }
            },
            "restart": { "enum": ["always", "on-failure", "never"], "default": "on-failure" },
            "stop_grace": { "type": "string", "pattern": TIME, "default": "10s" },
            "backup": { "type": "array", "items": { "type": "string", "pattern": r"^\$\{data_dir\}" } },
            "user": { "type": "string", "pattern": "^[a-z_][a-z0-9_-]{0,31}$", "description": "The user (and its primary group) the process runs as; it owns the instance's data dir. It must exist on the host (checked before an apply changes anything)." },
            "reload": {
                "type": "object", "additionalProperties": false, "required": ["command"],
                "description": "How a running instance takes new addresses of the services it uses (`${address:S}`) in place, instead of being replaced.",
                "properties": { "command": { "type": "array", "items": { "type": "string" }, "minItems": 1 } }
            },
            "image": { "type": "string", "description": "on docker sites: the image to run" },
            "build": { "type": "string", "description": "on docker sites: a folder with a Dockerfile, relative to the spec file" },
            "metrics": {
                "type": "object", "additionalProperties": false, "required": ["port"],
                "description": "Where each instance serves Prometheus metrics, scraped by the configuration `phoenix monitoring` writes.",
                "properties": {
                    "port": { "type": "string", "description": "One of the service's named ports (`ports:`)." },
                    "path": { "type": "string", "pattern": r"^/[^?#\s]*$", "default": "/metrics" }
                }
            },
            "description": { "type": "string" }
        }
    });
    let hook_target = json!({ "type": "string", "pattern": NAME });
    let job = json!({
        "type": "object", "additionalProperties": false, "required": ["name", "command"],
        "description": "A one-shot job: one instance that runs its command to the end. Jobs share the services' namespace and dependency graph; a job runs again only when its inputs change or when asked (`phoenix run-job`).",
        "properties": {
            "name": name, "project": { "type": "string" },
            "phase": { "type": "integer", "minimum": 1, "description": "Default 1, or the hooked service's phase." },
            "placement": service["properties"]["placement"].clone(),
            "resources": resources("Of the job's instance."),
            "command": { "type": "array", "items": { "type": "string" }, "minItems": 1 },
            "env": { "type": "object", "additionalProperties": { "type": "string" } },
            "depends_on": names,
            "enabled": { "type": "boolean", "default": true },
            "timeout": { "type": "string", "pattern": TIME, "default": "5m", "description": "Each attempt is stopped and counted as failed after this." },
            "retries": { "type": "integer", "minimum": 0, "maximum": 100, "default": 0 },
            "backoff": { "type": "string", "pattern": TIME, "default": "1s", "description": "Wait before the first retry; doubles with each further one (at most 10m)." },
            "hook": {
                "type": "object", "additionalProperties": false, "minProperties": 1, "maxProperties": 1,
                "description": "Runs the job around a service's rollout (and again whenever it changes or runs); `rollback`: only when an apply that changed that service (or ran that job) rolls back, after its instances are restored.",
                "properties": { "before": hook_target.clone(), "after": hook_target.clone(), "rollback": hook_target.clone() }
            },
            "for_each": {
                "type": "string", "pattern": NAME,
                "description": "One run per instance of this service (or job), with that instance's data dir, `${instance}` and placement; without `hook`, before that instance starts, and again when it is created or replaced."
            },
            "stop_grace": { "type": "string", "pattern": TIME, "default": "10s" },
            "user": service["properties"]["user"].clone(),
            "image": { "type": "string", "description": "on docker sites: the image to run" },
            "build": { "type": "string", "description": "on docker sites: a folder with a Dockerfile, relative to the spec file" },
            "description": { "type": "string" }
        }
    });
    let overlay = |of: &str| json!({ "type": "object", "description": format!("Changes to {of} by name."), "additionalProperties": { "type": "object" } });
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://phoenix.invalid/schema/fleet-1.json",
        "title": "Phoenix fleet spec, format 1",
        "type": "object",
        "additionalProperties": false,
        "required": ["phoenix", "name"],
        "properties": {
            "phoenix": { "const": 1, "description": "Format version." },
            "name": name,
            "description": { "type": "string" },
            "policy": {
                "type": "object", "additionalProperties": false,
                "properties": { "cpu_overcommit": { "type": "number", "minimum": 1, "default": 1 } }
            },
            "budget": resources("Totals the source document states for the whole fleet."),
            "sites": { "type": "array", "items": site },
            "projects": { "type": "array", "items": project },
            "services": { "type": "array", "items": service },
            "jobs": { "type": "array", "items": job },
            "secrets": { "type": "array", "items": crate::secrets::schema() },
            "environments": {
                "type": "object",
                "additionalProperties": {
                    "type": "object", "additionalProperties": false,
                    "properties": { "sites": overlay("sites"), "projects": overlay("projects"), "services": overlay("services"), "jobs": overlay("jobs"), "secrets": overlay("secrets") }
                }
            }
        }
    })
}
