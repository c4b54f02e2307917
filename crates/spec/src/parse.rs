//! From located YAML nodes to the model: types, unknown fields, quantities, names, duplicates,
//! substitutions, site groups and environment overlays. Cross-references and graphs are checked
//! afterwards by `validate`.

mod health_kinds;
use crate::diag::{Diagnostic, did_you_mean};
use crate::model::*;
use crate::quantity::{Kind, Range, parse_range, parse_time_ms};
use crate::subst;
use crate::yaml::{self, Node, NodeKind};
use std::collections::{BTreeMap, HashMap};

mod secrets;

/// Where references were written, for `validate` to point at: `"service:web:depends_on:0"`.
#[derive(Debug, Default)]
pub(crate) struct SourceMap {
    pub(crate) locs: HashMap<String, Location>,
}

impl SourceMap {
    pub(crate) fn at(&self, key: &str) -> Option<Location> {
        self.locs.get(key).cloned()
    }
    fn put(&mut self, key: String, loc: &Location) {
        self.locs.insert(key, loc.clone());
    }
}

type D = Vec<Diagnostic>;

/// Most sites one fleet may have, site groups (`count:`) expanded. A site group of one line
/// expands to `count` sites, so without a bound `count: 4000000000` would exhaust memory; the
/// largest fleet the seeds describe has 340.
pub const MAX_SITES: usize = 100_000;

const TOP_KEYS: &[&str] = &[
    "phoenix",
    "name",
    "description",
    "policy",
    "budget",
    "sites",
    "projects",
    "services",
    "jobs",
    "environments",
    "secrets",
];
const SITE_KEYS: &[&str] = &[
    "name",
    "tier",
    "region",
    "provider",
    "hosts",
    "docker",
    "ssh",
    "capacity",
    "count",
    "phase",
    "description",
];
const PROJECT_KEYS: &[&str] = &[
    "name",
    "depends_on",
    "hosted_on",
    "duration",
    "budget",
    "description",
];
const SERVICE_KEYS: &[&str] = &[
    "name",
    "project",
    "phase",
    "role",
    "validator_set",
    "replicas",
    "placement",
    "resources",
    "command",
    "env",
    "ports",
    "health",
    "depends_on",
    "enabled",
    "rollout",
    "restart",
    "stop_grace",
    "backup",
    "user",
    "reload",
    "image",
    "build",
    "metrics",
    "description",
];
/// The keys of a job (`jobs:`): a service instance's placement, resources, command, env and
/// data dir, and how it runs once.
const JOB_KEYS: &[&str] = &[
    "name",
    "project",
    "phase",
    "placement",
    "resources",
    "command",
    "env",
    "depends_on",
    "enabled",
    "timeout",
    "retries",
    "backoff",
    "hook",
    "for_each",
    "stop_grace",
    "user",
    "image",
    "build",
    "description",
];
const HOOK_KEYS: &[&str] = &["before", "after", "rollback"];
const DOCKER_KEYS: &[&str] = &["endpoints"];
const SSH_KEYS: &[&str] = &["hosts", "port", "identity"];
const RESOURCE_KEYS: &[&str] = &["cpu", "memory", "storage"];
const PLACEMENT_KEYS: &[&str] = &["tier", "sites", "spread"];
const HEALTH_KEYS: &[&str] = &[
    "http",
    "expect_status",
    "tcp",
    "command",
    "json",
    "metrics",
    "ledger",
    "timeout",
    "interval",
];
const ROLLOUT_KEYS: &[&str] = &[
    "strategy",
    "max_unavailable",
    "max_surge",
    "canary",
    "analysis",
];
const ENV_KEYS: &[&str] = &["sites", "projects", "services", "jobs", "secrets"];
const METRICS_KEYS: &[&str] = &["port", "path"];

/// The mapping keys of a node, checked against the allowed ones.
struct Fields<'n> {
    node: &'n Node,
    what: String,
}

impl<'n> Fields<'n> {
    fn new(node: &'n Node, what: impl Into<String>, allowed: &[&str], d: &mut D) -> Option<Self> {
        let what = what.into();
        let Some(entries) = node.map() else {
            d.push(Diagnostic::error(
                "wrong-type",
                format!("expected a mapping for {what}, found {}", node.describe()),
                Some(node.loc.clone()),
            ));
            return None;
        };
        let mut seen: HashMap<&str, &Location> = HashMap::new();
        for (k, _) in entries {
            let Some(key) = k.scalar() else {
                d.push(Diagnostic::error(
                    "wrong-type",
                    format!("keys of {what} must be plain names"),
                    Some(k.loc.clone()),
                ));
                continue;
            };
            if let Some(first) = seen.insert(key, &k.loc) {
                d.push(
                    Diagnostic::error(
                        "duplicate-key",
                        format!("`{key}` is given twice in {what}"),
                        Some(k.loc.clone()),
                    )
                    .with_hint(format!("the first is at line {}; keep one", first.line)),
                );
            }
            if !allowed.contains(&key) {
                let diag = Diagnostic::error(
                    "unknown-field",
                    format!("unknown field `{key}` in {what}"),
                    Some(k.loc.clone()),
                );
                let hint = match did_you_mean(key, allowed.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("known fields: {}", allowed.join(", ")),
                };
                d.push(diag.with_hint(hint));
            }
        }
        Some(Fields { node, what })
    }

    /// A present, non-null field.
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.node.get(key).filter(|n| !n.is_null())
    }

    fn required(&self, key: &str, d: &mut D) -> Option<&'n Node> {
        let v = self.get(key);
        if v.is_none() {
            d.push(Diagnostic::error(
                "missing-field",
                format!("{} is missing required field `{key}`", self.what),
                Some(self.node.loc.clone()),
            ));
        }
        v
    }
}

fn string(n: &Node, what: &str, d: &mut D) -> Option<String> {
    match n.scalar() {
        Some(s) => Some(s.to_string()),
        None => {
            d.push(Diagnostic::error(
                "wrong-type",
                format!("expected text for {what}, found {}", n.describe()),
                Some(n.loc.clone()),
            ));
            None
        }
    }
}

/// Names of sites, projects, services and the fleet: `[a-z0-9][a-z0-9-_]*`.
pub(crate) fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// A name as written. An invalid one is reported here, once, and still returned, so that the
/// item it names stays in the fleet and references to it resolve: one precise error, not a
/// second "missing `name`" or "unknown service" about the same mistake.
fn name(n: &Node, what: &str, d: &mut D) -> Option<String> {
    let s = string(n, what, d)?;
    if !valid_name(&s) {
        d.push(
            Diagnostic::error(
                "bad-name",
                format!(
                    "{} is not a valid name for {what}: {}",
                    quoted(&s),
                    name_problem(&s)
                ),
                Some(n.loc.clone()),
            )
            .with_hint(format!(
                "names are lowercase ASCII letters, digits, `-` and `_`, starting with a letter or digit, e.g. `{}`",
                suggest_name(&s, what)
            )),
        );
    }
    Some(s)
}

/// What makes `s` (not a valid name) invalid.
fn name_problem(s: &str) -> String {
    if s.is_empty() {
        return "it is empty".to_string();
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    let mut bad: Vec<char> = Vec::new();
    for c in s.chars().filter(|&c| !allowed(c)) {
        if !bad.contains(&c) {
            bad.push(c);
        }
    }
    if !bad.is_empty() && bad.iter().all(char::is_ascii_uppercase) {
        return "names are lowercase".to_string();
    }
    if bad.is_empty() {
        return "a name starts with a letter or digit, not `-` or `_`".to_string();
    }
    const SHOWN: usize = 5;
    let mut listed: Vec<String> = bad
        .iter()
        .take(SHOWN)
        .map(|c| match c {
            ' ' => "a space".to_string(),
            c if c.is_control() => format!("`{}`", c.escape_default()),
            c => format!("`{c}`"),
        })
        .collect();
    if bad.len() > SHOWN {
        listed.push(format!("{} more", bad.len() - SHOWN));
    }
    let list = match listed.len() {
        1 => listed.remove(0),
        _ => {
            let last = listed.pop().unwrap_or_default();
            format!("{} and {last}", listed.join(", "))
        }
    };
    let verb = crate::text::agree(bad.len(), "is", "are");
    format!("{list} {verb} not allowed")
}

/// A valid name close to `s`: lowercase, common accented Latin letters without their accents,
/// anything else as `-`, runs of `-` collapsed and the ends trimmed; a generic example for
/// `what` when nothing of `s` is left.
fn suggest_name(s: &str, what: &str) -> String {
    let mut out = String::new();
    for c in s.chars().flat_map(char::to_lowercase) {
        let ascii = match c {
            'a'..='z' | '0'..='9' | '_' => Some(c.to_string()),
            _ => unaccented(c).map(str::to_string),
        };
        match ascii {
            Some(a) => out.push_str(&a),
            None if !out.ends_with('-') => out.push('-'),
            None => {}
        }
    }
    let trimmed = out.trim_matches(['-', '_']);
    let short: String = trimmed.chars().take(40).collect();
    let short = short.trim_end_matches(['-', '_']);
    if short.is_empty() {
        match what {
            "the fleet" => "my-fleet",
            "a site" => "core-1",
            "a project" => "platform",
            "an environment" => "staging",
            _ => "web",
        }
        .to_string()
    } else {
        short.to_string()
    }
}

/// The ASCII letters of a lowercase accented Latin letter, if it is a common one.
fn unaccented(c: char) -> Option<&'static str> {
    Some(match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
        'æ' => "ae",
        'ç' | 'ć' | 'č' => "c",
        'ď' | 'đ' | 'ð' => "d",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ė' | 'ę' | 'ě' => "e",
        'ğ' => "g",
        'ì' | 'í' | 'î' | 'ï' | 'ī' | 'į' | 'ı' => "i",
        'ł' | 'ľ' => "l",
        'ñ' | 'ń' | 'ň' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ő' => "o",
        'œ' => "oe",
        'ř' => "r",
        'ś' | 'š' | 'ş' => "s",
        'ß' => "ss",
        'ť' | 'ţ' => "t",
        'þ' => "th",
        'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ů' | 'ű' | 'ų' => "u",
        'ý' | 'ÿ' => "y",
        'ź' | 'ż' | 'ž' => "z",
        '-' => "-",
        _ => return None,
    })
}

/// User text in backticks for a message, cut to 60 characters with `…`, so that a very long
/// value is not repeated whole.
fn quoted(s: &str) -> String {
    const SHOWN: usize = 60;
    if s.chars().count() <= SHOWN {
        format!("`{s}`")
    } else {
        let head: String = s.chars().take(SHOWN).collect();
        format!("`{head}…`")
    }
}

fn uint(n: &Node, what: &str, d: &mut D) -> Option<u32> {
    let ok = matches!(&n.kind, NodeKind::Scalar { plain: true, .. });
    match n
        .scalar()
        .filter(|_| ok)
        .and_then(|s| s.parse::<u32>().ok())
    {
        Some(v) => Some(v),
        None => {
            let text = n.scalar().filter(|_| ok).unwrap_or("");
            if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit()) {
                d.push(Diagnostic::error(
                    "bad-value",
                    format!(
                        "`{text}` is too large for {what}: the largest is {}",
                        u32::MAX
                    ),
                    Some(n.loc.clone()),
                ));
                return None;
            }
            d.push(Diagnostic::error(
                "wrong-type",
                format!(
                    "expected a whole number for {what}, found `{}`",
                    n.scalar().unwrap_or(n.describe())
                ),
                Some(n.loc.clone()),
            ));
            None
        }
    }
}

fn boolean(n: &Node, what: &str, d: &mut D) -> Option<bool> {
    match n
        .scalar()
        .filter(|_| matches!(&n.kind, NodeKind::Scalar { plain: true, .. }))
    {
        Some("true" | "True" | "TRUE") => Some(true),
        Some("false" | "False" | "FALSE") => Some(false),
        _ => {
            let mut diag = Diagnostic::error(
                "wrong-type",
                format!("expected `true` or `false` for {what}"),
                Some(n.loc.clone()),
            );
            if matches!(n.scalar(), Some("yes" | "no" | "on" | "off")) {
                diag = diag.with_hint("YAML 1.2 booleans are `true` and `false` only");
            }
            d.push(diag);
            None
        }
    }
}

fn range(n: &Node, kind: Kind, what: &str, d: &mut D) -> Option<Range> {
    let s = string(n, what, d)?;
    match parse_range(&s, kind) {
        Ok(r) => Some(r),
        Err(e) => {
            let mut diag = Diagnostic::error(
                "bad-quantity",
                format!("{what}: {}", e.message),
                Some(n.loc.clone()),
            );
            if let Some(h) = e.hint {
                diag = diag.with_hint(h);
            }
            d.push(diag);
            None
        }
    }
}

/// Milliseconds from `500ms`, `20s`, `5m`, `1h`.
fn time_ms(n: &Node, what: &str, d: &mut D) -> Option<u64> {
    let s = string(n, what, d)?;
    match parse_time_ms(&s) {
        Ok(ms) => Some(ms),
        Err(e) => {
            let mut diag = Diagnostic::error(
                "bad-quantity",
                format!("{what}: {}", e.message),
                Some(n.loc.clone()),
            );
            if let Some(h) = e.hint {
                diag = diag.with_hint(h);
            }
            d.push(diag);
            None
        }
    }
}

fn choice<'c>(n: &Node, what: &str, options: &[&'c str], d: &mut D) -> Option<&'c str> {
    let s = string(n, what, d)?;
    match options.iter().find(|o| **o == s) {
        Some(o) => Some(o),
        None => {
            let hint = match did_you_mean(&s, options.iter().copied()) {
                Some(m) => format!("did you mean `{m}`? (one of {})", options.join(", ")),
                None => format!("one of {}", options.join(", ")),
            };
            d.push(
                Diagnostic::error(
                    "bad-value",
                    format!("`{s}` is not a valid {what}"),
                    Some(n.loc.clone()),
                )
                .with_hint(hint),
            );
            None
        }
    }
}

fn list<'n>(n: &'n Node, what: &str, d: &mut D) -> Option<&'n [Node]> {
    match n.seq() {
        Some(items) => Some(items),
        None => {
            let mut diag = Diagnostic::error(
                "wrong-type",
                format!("expected a list for {what}, found {}", n.describe()),
                Some(n.loc.clone()),
            );
            if let Some(s) = n.scalar() {
                diag = diag.with_hint(format!("write `[{s}]`"));
            }
            d.push(diag);
            None
        }
    }
}

fn string_list(n: &Node, what: &str, d: &mut D) -> Vec<(String, Location)> {
    let Some(items) = list(n, what, d) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|i| string(i, what, d).map(|s| (s, i.loc.clone())))
        .collect()
}

fn resources(n: &Node, what: &str, d: &mut D) -> Resources {
    let Some(f) = Fields::new(n, what, RESOURCE_KEYS, d) else {
        return Resources::ZERO;
    };
    let q = |key: &str, kind: Kind, d: &mut D| {
        f.get(key)
            .and_then(|v| range(v, kind, &format!("{what} `{key}`"), d))
            .unwrap_or(Range::ZERO)
    };
    Resources {
        cpu: q("cpu", Kind::Cpu, d),
        memory: q("memory", Kind::Bytes, d),
        storage: q("storage", Kind::Bytes, d),
    }
}

fn budget(n: &Node, what: &str, d: &mut D) -> Option<Budget> {
    let f = Fields::new(n, what, RESOURCE_KEYS, d)?;
    let q = |key: &str, kind: Kind, d: &mut D| {
        f.get(key)
            .and_then(|v| range(v, kind, &format!("{what} `{key}`"), d))
    };
    Some(Budget {
        cpu: q("cpu", Kind::Cpu, d),
        memory: q("memory", Kind::Bytes, d),
        storage: q("storage", Kind::Bytes, d),
        location: n.loc.clone(),
    })
}

fn item_name(n: &Node) -> Option<&str> {
    n.get("name").and_then(Node::scalar)
}

/// Deep merge of an overlay into a base node: mappings merge key by key, anything else replaces.
fn merge(base: &Node, overlay: &Node) -> Node {
    match (&base.kind, &overlay.kind) {
        (NodeKind::Map(b), NodeKind::Map(o)) => {
            let mut entries = b.clone();
            for (ok, ov) in o {
                match entries
                    .iter_mut()
                    .find(|(bk, _)| bk.scalar().is_some() && bk.scalar() == ok.scalar())
                {
                    Some((_, bv)) => *bv = merge(bv, ov),
                    None => entries.push((ok.clone(), ov.clone())),
                }
            }
            Node {
                kind: NodeKind::Map(entries),
                loc: base.loc.clone(),
            }
        }
        _ => overlay.clone(),
    }
}

#[derive(Default)]
/// Everything the files say, before conversion: top-level values, and sites, projects,
/// services and environment overlays as node trees.
pub(crate) struct Collected {
    format: Option<(u32, Location)>,
    name: Option<(String, Location)>,
    /// True when some file has a `name`, even one that is not text.
    name_written: bool,
    description: Option<String>,
    policy: Option<Policy>,
    budget: Option<Budget>,
    sites: Vec<Node>,
    projects: Vec<Node>,
    services: Vec<Node>,
    jobs: Vec<Node>,
    /// `secrets:` entries of every file, in order (an environment may change their source).
    secrets: Vec<Node>,
    /// env name -> section ("sites") -> entries (item name node, overlay node)
    environments: BTreeMap<String, Vec<(String, Node, Node)>>,
}

fn once<T>(slot: &mut Option<T>, value: Option<T>, key: &str, loc: &Location, d: &mut D) {
    if value.is_none() {
        return;
    }
    if slot.is_some() {
        d.push(Diagnostic::error("duplicate-definition", format!("`{key}` is defined in more than one file"), Some(loc.clone()))
            .with_hint("define it once; later files may only add sites, projects, services and environments"));
    } else {
        *slot = value;
    }
}

fn collect_file(root: &Node, c: &mut Collected, d: &mut D) {
    let Some(f) = Fields::new(root, "the fleet spec", TOP_KEYS, d) else {
        return;
    };
    match f.get("phoenix") {
        Some(v) => {
            if let Some(ver) = uint(v, "`phoenix` (the format version)", d) {
                if ver != 1 {
                    d.push(
                        Diagnostic::error(
                            "unsupported-format",
                            format!("format version {ver} is not supported"),
                            Some(v.loc.clone()),
                        )
                        .with_hint("this Phoenix reads `phoenix: 1`"),
                    );
                }
                if c.format.is_none() {
                    c.format = Some((ver, v.loc.clone()));
                }
            }
        }
        None => d.push(
            Diagnostic::error(
                "missing-field",
                "the fleet spec is missing required field `phoenix` (the format version)",
                Some(root.loc.clone()),
            )
            .with_hint("start the file with `phoenix: 1`"),
        ),
    }
    if f.get("name").is_some() {
        c.name_written = true;
    }
    if let Some(v) = f.get("name")
        && let Some(n) = name(v, "the fleet", d)
    {
        match &c.name {
            Some((first, _)) if *first != n => d.push(
                Diagnostic::error(
                    "fleet-name-mismatch",
                    format!("fleet name `{n}` differs from `{first}` given in an earlier file"),
                    Some(v.loc.clone()),
                )
                .with_hint("every file of one fleet has the same `name`, or none"),
            ),
            Some(_) => {}
            None => c.name = Some((n, v.loc.clone())),
        }
    }
    if let Some(v) = f.get("description") {
        let s = string(v, "the fleet description", d);
        once(&mut c.description, s, "description", &v.loc, d);
    }
    if let Some(v) = f.get("policy") {
        let p = policy(v, d);
        once(&mut c.policy, p, "policy", &v.loc, d);
    }
    if let Some(v) = f.get("budget") {
        let b = budget(v, "the fleet budget", d);
        once(&mut c.budget, b, "budget", &v.loc, d);
    }
    for (key, out) in [
        ("sites", &mut c.sites),
        ("projects", &mut c.projects),
        ("services", &mut c.services),
        ("jobs", &mut c.jobs),
    ] {
        if let Some(v) = f.get(key)
            && let Some(items) = list(v, &format!("`{key}`"), d)
        {
            out.extend(items.iter().cloned());
        }
    }
    if let Some(v) = f.get("environments") {
        collect_environments(v, c, d);
    }
    if let Some(v) = f.get("secrets")
        && let Some(items) = list(v, "`secrets`", d)
    {
        c.secrets.extend(items.iter().cloned());
    }
}

fn collect_environments(v: &Node, c: &mut Collected, d: &mut D) {
    let Some(envs) = v.map() else {
        d.push(Diagnostic::error(
            "wrong-type",
            format!(
                "expected a mapping of environment names for `environments`, found {}",
                v.describe()
            ),
            Some(v.loc.clone()),
        ));
        return;
    };
    for (k, body) in envs {
        let Some(env) = name(k, "an environment", d) else {
            continue;
        };
        let what = format!("environment `{env}`");
        let entries = c.environments.entry(env.clone()).or_default();
        if body.is_null() {
            continue;
        }
        let Some(f) = Fields::new(body, &what, ENV_KEYS, d) else {
            continue;
        };
        for section in ENV_KEYS {
            let Some(sec) = f.get(section) else { continue };
            let Some(items) = sec.map() else {
                d.push(Diagnostic::error("wrong-type", format!("expected a mapping from names to changes for `{section}` in {what}, found {}", sec.describe()), Some(sec.loc.clone()))
                    .with_hint(format!("e.g. `{section}: {{ some-name: {{ ... }} }}`")));
                continue;
            };
            for (item_key, overlay) in items {
                entries.push((section.to_string(), item_key.clone(), overlay.clone()));
            }
        }
    }
}

fn policy(n: &Node, d: &mut D) -> Option<Policy> {
    let f = Fields::new(n, "`policy`", &["cpu_overcommit"], d)?;
    let mut p = Policy::default();
    if let Some(v) = f.get("cpu_overcommit") {
        match v.scalar().and_then(|s| s.parse::<f64>().ok()) {
            Some(r) if r.is_finite() && (1.0..=100.0).contains(&r) => p.cpu_overcommit = r,
            _ => d.push(Diagnostic::error("bad-value", "`cpu_overcommit` must be a ratio between 1 and 100", Some(v.loc.clone()))
                .with_hint("e.g. `cpu_overcommit: 2` lets CPU demand reach twice the cores, with a warning")),
        }
    }
    Some(p)
}

/// The sites, projects and services of a fleet before conversion, as node trees.
#[derive(Clone)]
struct Items {
    sites: Vec<Node>,
    projects: Vec<Node>,
    services: Vec<Node>,
    jobs: Vec<Node>,
    secrets: Vec<Node>,
}

fn apply_environment(c: &Collected, env: &str, it: &mut Items, d: &mut D) {
    let Some(entries) = c.environments.get(env).cloned() else {
        let known: Vec<&str> = c.environments.keys().map(String::as_str).collect();
        let mut diag = Diagnostic::error(
            "unknown-environment",
            format!("environment `{env}` is not defined"),
            None,
        );
        diag = match did_you_mean(env, known.iter().copied()) {
            Some(m) => diag.with_hint(format!(
                "did you mean `{m}`? (defined: {})",
                known.join(", ")
            )),
            None if known.is_empty() => diag.with_hint("the spec defines no `environments`"),
            None => diag.with_hint(format!("defined: {}", known.join(", "))),
        };
        d.push(diag);
        return;
    };
    for (section, key, overlay) in entries {
        let items = match section.as_str() {
            "sites" => &mut it.sites,
            "projects" => &mut it.projects,
            "jobs" => &mut it.jobs,
            "secrets" => &mut it.secrets,
            _ => &mut it.services,
        };
        let Some(target) = key.scalar() else { continue };
        match items.iter_mut().find(|n| item_name(n) == Some(target)) {
            Some(base) => {
                if overlay.map().is_none() {
                    d.push(Diagnostic::error("wrong-type", format!("expected a mapping of changes for `{target}` in environment `{env}`, found {}", overlay.describe()), Some(overlay.loc.clone())));
                    continue;
                }
                if overlay.get("name").is_some() {
                    d.push(Diagnostic::error(
                        "bad-value",
                        format!("environment `{env}` cannot rename `{target}`"),
                        Some(overlay.loc.clone()),
                    ));
                    continue;
                }
                *base = if section == "secrets" {
                    // A secret has exactly one source: an overlay that names one replaces the
                    // base's, rather than merging into a secret with two.
                    merge(&secrets::without_source_if_given(base, &overlay), &overlay)
                } else {
                    merge(base, &overlay)
                };
            }
            None => {
                let known: Vec<&str> = items.iter().filter_map(item_name).collect();
                let singular = section.trim_end_matches('s');
                let mut diag = Diagnostic::error(
                    "unknown-reference",
                    format!(
                        "environment `{env}` changes {singular} `{target}`, which is not defined"
                    ),
                    Some(key.loc.clone()),
                );
                diag = match did_you_mean(target, known.iter().copied()) {
                    Some(m) => diag.with_hint(format!("did you mean `{m}`?")),
                    None => diag.with_hint(format!("an environment only changes what the base files define; known {section}: {}", known.join(", "))),
                };
                d.push(diag);
            }
        }
    }
}

/// Reads every file into node trees. `None` when no file has a document.
pub(crate) fn collect(sources: &[(String, String)], d: &mut D) -> Option<Collected> {
    let mut c = Collected::default();
    let mut any_root = false;
    for (i, (_, text)) in sources.iter().enumerate() {
        if let Some(root) = yaml::parse(i, text, d) {
            any_root = true;
            collect_file(&root, &mut c, d);
        }
    }
    any_root.then_some(c)
}

impl Collected {
    /// The names of the environments the files define, in order.
    pub(crate) fn environment_names(&self) -> impl Iterator<Item = &str> {
        self.environments.keys().map(String::as_str)
    }
}

/// Converts the collected files, with environment `env` applied, into the model. The
/// collected nodes are not changed, so one collection builds every environment.
pub(crate) fn build(
    c: &Collected,
    sources: &[(String, String)],
    env: Option<&str>,
    d: &mut D,
) -> Option<(Fleet, SourceMap)> {
    let mut items = Items {
        sites: c.sites.clone(),
        projects: c.projects.clone(),
        services: c.services.clone(),
        jobs: c.jobs.clone(),
        secrets: c.secrets.clone(),
    };
    if let Some(env) = env {
        apply_environment(c, env, &mut items, d);
    }
    let mut map = SourceMap::default();
    let mut sites = Vec::new();
    for n in &items.sites {
        let more = site(n, d);
        if sites.len() + more.len() > MAX_SITES {
            d.push(
                Diagnostic::error(
                    "too-large",
                    format!("with this site the fleet has more than {MAX_SITES} sites"),
                    Some(n.loc.clone()),
                )
                .with_hint(format!("a fleet has at most {MAX_SITES} sites in all (`count:` included); split it into several fleets")),
            );
            break;
        }
        sites.extend(more);
    }
    let projects: Vec<Project> = items
        .projects
        .iter()
        .filter_map(|n| project(n, &mut map, d))
        .collect();
    let mut services: Vec<Service> = items
        .services
        .iter()
        .filter_map(|n| service(n, false, &mut map, d))
        .collect();
    let jobs: Vec<Service> = items
        .jobs
        .iter()
        .filter_map(|n| service(n, true, &mut map, d))
        .collect();

    check_duplicates(
        "site",
        sites
            .iter()
            .map(|s| (s.name.as_str(), &s.location, s.group.as_deref())),
        d,
    );
    check_duplicates(
        "project",
        projects
            .iter()
            .map(|p| (p.name.as_str(), &p.location, None)),
        d,
    );
    check_duplicates(
        "service",
        services
            .iter()
            .map(|s| (s.name.as_str(), &s.location, None)),
        d,
    );
    check_job_names(&services, &jobs, d);
    let fleet_secrets: Vec<crate::secrets::Secret> = items
        .secrets
        .iter()
        .filter_map(|n| secrets::secret(n, d))
        .collect();
    check_duplicates(
        "secret",
        fleet_secrets
            .iter()
            .map(|s| (s.name.as_str(), &s.location, None)),
        d,
    );
    services.extend(jobs);
    resolve_hooks(&mut services, &mut map, d);
    resolve_for_each(&mut services, &mut map, d);

    // Without a usable name the fleet is still built (with an empty one) so that validation
    // reports every other problem too; the result is an error either way.
    let name = match &c.name {
        Some((n, _)) => n.clone(),
        // Written but not text: `name()` has said so.
        None if c.name_written => String::new(),
        None => {
            d.push(
                Diagnostic::error(
                    "missing-field",
                    "the fleet spec is missing required field `name`",
                    Some(Location {
                        file: 0,
                        line: 1,
                        col: 1,
                        offset: 0,
                        len: 1,
                    }),
                )
                .with_hint("add `name: my-fleet` (lowercase letters, digits, `-`, `_`)"),
            );
            String::new()
        }
    };
    let fleet = Fleet {
        format: c.format.as_ref().map_or(1, |f| f.0),
        name,
        description: c.description.clone(),
        environment: env.map(str::to_string),
        environments: c.environments.keys().cloned().collect(),
        policy: c.policy.unwrap_or_default(),
        budget: c.budget.clone(),
        sites,
        projects,
        services,
        secrets: fleet_secrets,
        files: sources.iter().map(|s| s.0.clone()).collect(),
    };
    Some((fleet, map))
}

/// Jobs and services share one namespace: a job may not take a service's name, nor another
/// job's.
fn check_job_names(services: &[Service], jobs: &[Service], d: &mut D) {
    let mut seen: HashMap<&str, (&Location, &str)> = services
        .iter()
        .map(|s| (s.name.as_str(), (&s.location, "service")))
        .collect();
    for j in jobs {
        if let Some((first, kind)) = seen.insert(&j.name, (&j.location, "job")) {
            d.push(
                Diagnostic::error(
                    "duplicate-name",
                    format!("job `{}` has the name of a {kind} defined before", j.name),
                    Some(j.location.clone()),
                )
                .with_hint(format!(
                    "the {kind} is at line {}, column {}{}; jobs and services share one namespace",
                    first.line,
                    first.col,
                    if first.file != j.location.file {
                        " of another file"
                    } else {
                        ""
                    }
                )),
            );
        }
    }
}

/// Turns every `hook:` into a dependency: `before: S` makes S depend on the job, `after: S`
/// makes the job depend on S; a hook job without its own `phase` takes S's. The dependency is
/// located at the hook, so that a cycle through it points there.
fn resolve_hooks(services: &mut [Service], map: &mut SourceMap, d: &mut D) {
    let index: HashMap<String, usize> = services
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.clone(), i))
        .collect();
    for j in 0..services.len() {
        let Some(hook) = services[j].job.as_ref().and_then(|job| job.hook.clone()) else {
            continue;
        };
        let job_name = services[j].name.clone();
        let key = format!("service:{job_name}:hook");
        let loc = map.at(&key);
        // A hook may wrap a service or another job (a backup before a migration).
        let target = match index.get(&hook.service) {
            Some(&t) if t != j => t,
            found => {
                let known: Vec<&str> = services
                    .iter()
                    .filter(|s| s.name != job_name)
                    .map(|s| s.name.as_str())
                    .collect();
                let mut diag = Diagnostic::error(
                    if found.is_some() {
                        "cycle"
                    } else {
                        "unknown-reference"
                    },
                    match found {
                        Some(_) => format!("job `{job_name}` is a hook of itself"),
                        None => format!(
                            "the hook of job `{job_name}` refers to unknown service or job `{}`",
                            hook.service
                        ),
                    },
                    loc,
                );
                if found.is_none()
                    && let Some(m) = did_you_mean(&hook.service, known.iter().copied())
                {
                    diag = diag.with_hint(format!("did you mean `{m}`?"));
                }
                d.push(diag);
                continue;
            }
        };
        let target_name = services[target].name.clone();
        if !map.locs.contains_key(&format!("service:{job_name}:phase")) {
            services[j].phase = services[target].phase;
        }
        let Some(loc) = map.at(&key) else { continue };
        let (from, on) = match hook.when {
            HookWhen::Before => (target, job_name),
            HookWhen::After => (j, target_name),
            // Run by the rollback, not by a wave: no order to add.
            HookWhen::Rollback => continue,
        };
        let from_name = services[from].name.clone();
        if !services[from].depends_on.contains(&on) {
            let i = services[from].depends_on.len();
            map.put(format!("service:{from_name}:depends_on:{i}"), &loc);
            services[from].depends_on.push(on);
        }
    }
}

/// Checks every `for_each:` and orders the job: without a `hook:`, it runs before its
/// target (as `hook: {before: TARGET}`: the target depends on it, located at `for_each`, and
/// the job takes the target's phase unless it has its own). Runs after [`resolve_hooks`].
fn resolve_for_each(services: &mut [Service], map: &mut SourceMap, d: &mut D) {
    let index: HashMap<String, usize> = services
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.clone(), i))
        .collect();
    for j in 0..services.len() {
        let Some(job) = services[j].job.clone() else {
            continue;
        };
        let Some(target_name) = job.for_each.clone() else {
            continue;
        };
        let job_name = services[j].name.clone();
        let loc = map.at(&format!("service:{job_name}:for_each"));
        let problem = match index.get(&target_name) {
            None => {
                let mut diag = Diagnostic::error(
                    "unknown-reference",
                    format!(
                        "the `for_each` of job `{job_name}` refers to unknown service or job `{target_name}`"
                    ),
                    loc.clone(),
                );
                if let Some(m) = did_you_mean(
                    &target_name,
                    services
                        .iter()
                        .filter(|s| s.name != job_name)
                        .map(|s| s.name.as_str()),
                ) {
                    diag = diag.with_hint(format!("did you mean `{m}`?"));
                }
                Some(diag)
            }
            Some(&t) if t == j => Some(
                Diagnostic::error(
                    "cycle",
                    format!("job `{job_name}` names itself in its `for_each`"),
                    loc.clone(),
                )
                .with_hint("name the service whose instances the job prepares"),
            ),
            Some(&t) if services[t].job.as_ref().is_some_and(|x| x.for_each.is_some()) => Some(
                Diagnostic::error(
                    "bad-value",
                    format!(
                        "the `for_each` of job `{job_name}` names job `{target_name}`, which has a `for_each` of its own"
                    ),
                    loc.clone(),
                )
                .with_hint("name the service both jobs run for"),
            ),
            Some(&t) if services[t].is_rollback_job() => Some(
                Diagnostic::error(
                    "bad-value",
                    format!(
                        "the `for_each` of job `{job_name}` names `{target_name}`, a job that only runs on rollback"
                    ),
                    loc.clone(),
                )
                .with_hint("name a service, or a job that runs in the waves"),
            ),
            Some(_) => None,
        };
        if let Some(p) = problem {
            d.push(p);
            continue;
        }
        if job.hook.is_some() {
            // The hook says when it runs.
            continue;
        }
        let Some(&target) = index.get(&target_name) else {
            continue;
        };
        if !map.locs.contains_key(&format!("service:{job_name}:phase")) {
            services[j].phase = services[target].phase;
        }
        let Some(loc) = loc else { continue };
        if !services[target].depends_on.contains(&job_name) {
            let i = services[target].depends_on.len();
            map.put(format!("service:{target_name}:depends_on:{i}"), &loc);
            services[target].depends_on.push(job_name);
        }
    }
}

/// A job's `hook: {before: SERVICE}`, `{after: SERVICE}` or `{rollback: SERVICE}`.
fn hook(n: &Node, what: &str, d: &mut D) -> Option<Hook> {
    let f = Fields::new(n, format!("`hook` of {what}"), HOOK_KEYS, d)?;
    let given: Vec<(HookWhen, &Node)> = [
        (HookWhen::Before, "before"),
        (HookWhen::After, "after"),
        (HookWhen::Rollback, "rollback"),
    ]
    .into_iter()
    .filter_map(|(w, k)| Some((w, f.get(k)?)))
    .collect();
    match given.as_slice() {
        [(when, v)] => name(v, "a service", d).map(|service| Hook {
            when: *when,
            service,
        }),
        [] => {
            d.push(
                Diagnostic::error(
                    "missing-field",
                    format!("the `hook` of {what} names no service"),
                    Some(n.loc.clone()),
                )
                .with_hint(
                    "write `hook: {before: SERVICE}`, `{after: SERVICE}` or `{rollback: SERVICE}`",
                ),
            );
            None
        }
        [.., (_, last)] => {
            d.push(
                Diagnostic::error(
                    "bad-value",
                    format!(
                        "the `hook` of {what} has more than one of `before`, `after` and `rollback`"
                    ),
                    Some(last.loc.clone()),
                )
                .with_hint(
                    "a hook runs at one moment of one service's rollout; write a second job for the other",
                ),
            );
            None
        }
    }
}

/// The `timeout`, `retries`, `backoff` and `hook` of a job.
fn job_settings(f: &Fields<'_>, what: &str, map: &mut SourceMap, prefix: &str, d: &mut D) -> Job {
    let timeout_ms = match f.get("timeout") {
        Some(v) => match time_ms(v, "`timeout`", d) {
            Some(0) => {
                d.push(
                    Diagnostic::error(
                        "bad-value",
                        format!("the `timeout` of {what} is zero"),
                        Some(v.loc.clone()),
                    )
                    .with_hint("a zero timeout stops every attempt at once; e.g. `timeout: 5m`"),
                );
                DEFAULT_JOB_TIMEOUT_MS
            }
            Some(t) => t,
            None => DEFAULT_JOB_TIMEOUT_MS,
        },
        None => DEFAULT_JOB_TIMEOUT_MS,
    };
    let retries = match f.get("retries") {
        Some(v) => match uint(v, "`retries`", d) {
            Some(r) if r > MAX_JOB_RETRIES => {
                d.push(
                    Diagnostic::error(
                        "too-large",
                        format!("`{r}` is too large: a job has at most {MAX_JOB_RETRIES} retries"),
                        Some(v.loc.clone()),
                    )
                    .with_hint("a job that needs more attempts is waiting for something: make it a dependency"),
                );
                MAX_JOB_RETRIES
            }
            Some(r) => r,
            None => 0,
        },
        None => 0,
    };
    let backoff_ms = f
        .get("backoff")
        .and_then(|v| time_ms(v, "`backoff`", d))
        .unwrap_or(DEFAULT_JOB_BACKOFF_MS);
    let hook = f.get("hook").and_then(|v| {
        map.put(format!("{prefix}:hook"), &v.loc);
        hook(v, what, d)
    });
    let for_each = f.get("for_each").and_then(|v| {
        map.put(format!("{prefix}:for_each"), &v.loc);
        name(v, "`for_each`", d)
    });
    Job {
        timeout_ms,
        retries,
        backoff_ms,
        hook,
        for_each,
    }
}

fn check_duplicates<'a>(
    kind: &str,
    items: impl Iterator<Item = (&'a str, &'a Location, Option<&'a str>)>,
    d: &mut D,
) {
    let mut seen: HashMap<&str, &Location> = HashMap::new();
    for (name, loc, group) in items {
        if let Some(first) = seen.insert(name, loc) {
            let mut diag = Diagnostic::error("duplicate-name", format!("{kind} `{name}` is defined twice"), Some(loc.clone()))
                .with_hint(format!("the first definition is at line {}, column {}{}; names must be unique across all files", first.line, first.col,
                    if first.file != loc.file { " of an earlier file" } else { "" }));
            if let Some(g) = group {
                diag = diag.with_hint(format!("site group `{g}` expands to `{g}-1`, `{g}-2`, ...; it collides with a site of the same name"));
            }
            d.push(diag);
        }
    }
}

/// The `docker:` and `ssh:` sections of a site, each allowed only on a site of that provider;
/// an `ssh` site must list its hosts.
fn provider_sections(
    f: &Fields<'_>,
    what: &str,
    provider: ProviderKind,
    d: &mut D,
) -> (Option<DockerSite>, Option<SshSite>) {
    let wrong_provider = |key: &str, v: &Node, d: &mut D| {
        d.push(
            Diagnostic::error(
                "bad-value",
                format!(
                    "{what} has a `{key}:` section but its provider is `{}`",
                    provider.as_str()
                ),
                Some(v.loc.clone()),
            )
            .with_hint(format!("set `provider: {key}`, or remove the section")),
        );
    };
    let docker = f.get("docker").and_then(|v| {
        if provider != ProviderKind::Docker {
            wrong_provider("docker", v, d);
            return None;
        }
        let g = Fields::new(v, format!("`docker` of {what}"), DOCKER_KEYS, d)?;
        let endpoints = g
            .get("endpoints")
            .map(|e| string_list(e, "`docker.endpoints`", d))
            .unwrap_or_default()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        Some(DockerSite { endpoints })
    });
    let ssh = f.get("ssh").and_then(|v| {
        if provider != ProviderKind::Ssh {
            wrong_provider("ssh", v, d);
            return None;
        }
        let g = Fields::new(v, format!("`ssh` of {what}"), SSH_KEYS, d)?;
        let hosts: Vec<String> = g
            .get("hosts")
            .map(|e| string_list(e, "`ssh.hosts`", d))
            .unwrap_or_default()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        let port = g.get("port").and_then(|p| {
            let n = uint(p, "`ssh.port`", d)?;
            match u16::try_from(n) {
                Ok(port) if port > 0 => Some(port),
                _ => {
                    d.push(Diagnostic::error(
                        "bad-value",
                        format!("`ssh.port` of {what} is {n}, not a TCP port (1-65535)"),
                        Some(p.loc.clone()),
                    ));
                    None
                }
            }
        });
        let identity = g
            .get("identity")
            .and_then(|i| string(i, "`ssh.identity`", d));
        Some(SshSite {
            hosts,
            port,
            identity,
        })
    });
    if provider == ProviderKind::Ssh && ssh.as_ref().is_none_or(|s| s.hosts.is_empty()) {
        d.push(
            Diagnostic::error(
                "missing-field",
                format!("{what} uses provider `ssh` but lists no `ssh.hosts`"),
                f.get("provider").map(|v| v.loc.clone()),
            )
            .with_hint("add `ssh: { hosts: [\"deploy@10.0.0.2\"] }`, one entry per host"),
        );
    }
    (docker, ssh)
}

fn site(n: &Node, d: &mut D) -> Vec<Site> {
    let what = match item_name(n) {
        Some(s) => format!("site `{s}`"),
        None => "a site".to_string(),
    };
    let Some(f) = Fields::new(n, &what, SITE_KEYS, d) else {
        return Vec::new();
    };
    let name_v = f.required("name", d).and_then(|v| name(v, "a site", d));
    let tier = f
        .required("tier", d)
        .and_then(|v| choice(v, "tier", &["core", "regional", "edge"], d))
        .map(|t| match t {
            "core" => Tier::Core,
            "regional" => Tier::Regional,
            _ => Tier::Edge,
        });
    let provider = f
        .get("provider")
        .and_then(|v| {
            choice(
                v,
                "provider",
                &["local", "docker", "ssh", "kubernetes", "proxmox"],
                d,
            )
        })
        .map(|p| match p {
            "docker" => ProviderKind::Docker,
            "ssh" => ProviderKind::Ssh,
            "kubernetes" => ProviderKind::Kubernetes,
            "proxmox" => ProviderKind::Proxmox,
            _ => ProviderKind::Local,
        })
        .unwrap_or_default();
    let (docker, ssh) = provider_sections(&f, &what, provider, d);
    let listed = docker
        .as_ref()
        .map(|x| x.endpoints.len())
        .filter(|n| *n > 0)
        .or_else(|| ssh.as_ref().map(|x| x.hosts.len()))
        .and_then(|n| u32::try_from(n).ok());
    let written_hosts = f.get("hosts").and_then(|v| uint(v, "`hosts`", d));
    if let (Some(listed), Some(written), Some(v)) = (listed, written_hosts, f.get("hosts"))
        && listed != written
    {
        d.push(
            Diagnostic::error(
                "bad-value",
                format!(
                    "{what} has `hosts: {written}` but lists {listed} {}",
                    if provider == ProviderKind::Docker {
                        "endpoint(s)"
                    } else {
                        "ssh host(s)"
                    }
                ),
                Some(v.loc.clone()),
            )
            .with_hint("the number of hosts is the length of the list; remove `hosts:`"),
        );
    }
    let hosts = listed.or(written_hosts).unwrap_or(1);
    if hosts == 0
        && let Some(v) = f.get("hosts")
    {
        d.push(
            Diagnostic::error(
                "bad-value",
                format!("{what} has `hosts: 0`"),
                Some(v.loc.clone()),
            )
            .with_hint("a site has at least one host; remove the site instead"),
        );
    }
    let capacity = match f.required("capacity", d) {
        Some(v) => resources(v, &format!("capacity of {what}"), d),
        None => Resources::ZERO,
    };
    let region = f.get("region").and_then(|v| string(v, "`region`", d));
    let description = f
        .get("description")
        .and_then(|v| string(v, "`description`", d));
    let phase = f
        .get("phase")
        .and_then(|v| uint(v, "`phase`", d))
        .unwrap_or(1)
        .max(1);
    let count = f.get("count").and_then(|v| uint(v, "`count`", d));
    let (Some(name), Some(tier)) = (name_v, tier) else {
        return Vec::new();
    };
    let base = Site {
        name: name.clone(),
        tier,
        region,
        provider,
        hosts,
        docker,
        ssh,
        capacity,
        phase,
        group: None,
        description,
        location: n.loc.clone(),
    };
    match count {
        None => vec![base],
        Some(0) => {
            d.push(
                Diagnostic::error(
                    "bad-value",
                    format!("{what} has `count: 0`"),
                    f.get("count").map(|v| v.loc.clone()),
                )
                .with_hint("a site group has at least one site"),
            );
            Vec::new()
        }
        Some(k) if k as usize > MAX_SITES => {
            d.push(
                Diagnostic::error(
                    "too-large",
                    format!(
                        "{what} has `count: {k}`, more than the {MAX_SITES} sites a fleet may have"
                    ),
                    f.get("count").map(|v| v.loc.clone()),
                )
                .with_hint(format!(
                    "a fleet has at most {MAX_SITES} sites in all; split it into several fleets"
                )),
            );
            Vec::new()
        }
        Some(k) => (1..=k)
            .map(|i| Site {
                name: format!("{name}-{i}"),
                group: Some(name.clone()),
                ..base.clone()
            })
            .collect(),
    }
}

fn refs(
    f: &Fields<'_>,
    key: &str,
    prefix: &str,
    what: &str,
    map: &mut SourceMap,
    d: &mut D,
) -> Vec<String> {
    let Some(v) = f.get(key) else {
        return Vec::new();
    };
    string_list(v, what, d)
        .into_iter()
        .enumerate()
        .map(|(i, (s, loc))| {
            map.put(format!("{prefix}:{key}:{i}"), &loc);
            s
        })
        .collect()
}

fn project(n: &Node, map: &mut SourceMap, d: &mut D) -> Option<Project> {
    let what = match item_name(n) {
        Some(s) => format!("project `{s}`"),
        None => "a project".to_string(),
    };
    let f = Fields::new(n, &what, PROJECT_KEYS, d)?;
    let name_v = f.required("name", d).and_then(|v| name(v, "a project", d));
    let prefix = format!("project:{}", name_v.as_deref().unwrap_or("?"));
    let depends_on = refs(
        &f,
        "depends_on",
        &prefix,
        &format!("`depends_on` of {what}"),
        map,
        d,
    );
    let hosted_on = f.get("hosted_on").and_then(|v| {
        map.put(format!("{prefix}:hosted_on"), &v.loc);
        string(v, "`hosted_on`", d)
    });
    let duration = f
        .get("duration")
        .and_then(|v| range(v, Kind::Duration, &format!("duration of {what}"), d));
    let budget = f
        .get("budget")
        .and_then(|v| budget(v, &format!("budget of {what}"), d));
    let description = f
        .get("description")
        .and_then(|v| string(v, "`description`", d));
    Some(Project {
        name: name_v?,
        depends_on,
        hosted_on,
        duration,
        budget,
        description,
        location: n.loc.clone(),
    })
}

/// Checks every `${...}` in a string against the built-ins and the service's ports.
fn check_subst(n: &Node, text: &str, ports: &[String], what: &str, d: &mut D) {
    for r in subst::references(text) {
        if r.name.is_empty() && !text[r.offset..].contains('}') {
            d.push(
                Diagnostic::error(
                    "bad-substitution",
                    format!("unterminated `${{` in {what}"),
                    Some(n.loc.clone()),
                )
                .with_hint("close it with `}`, e.g. `${port}`"),
            );
            continue;
        }
        if subst::BUILTINS.contains(&r.name.as_str()) || ports.contains(&r.name) {
            continue;
        }
        if secrets::check_use(n, &r.name, what, d) {
            continue;
        }
        // Whom an address names is checked with the whole fleet (validate.rs); here its form.
        match subst::address_ref(&r.name) {
            Some(Ok(_)) => continue,
            Some(Err(why)) => {
                d.push(
                    Diagnostic::error(
                        "bad-substitution",
                        format!("malformed `${{{}}}` in {what}: {why}", r.name),
                        Some(n.loc.clone()),
                    )
                    .with_hint("write `${address:SERVICE}`, `${address:SERVICE:PORT}` or `${addresses:SERVICE}`"),
                );
                continue;
            }
            None => {}
        }
        let known: Vec<String> = ports
            .iter()
            .cloned()
            .chain(subst::BUILTINS.iter().map(|s| s.to_string()))
            .collect();
        let mut loc = n.loc.clone();
        if matches!(&n.kind, NodeKind::Scalar { plain: true, .. }) && !text.contains('\n') {
            // Locations count characters; `r` counts bytes.
            let before = text[..r.offset].chars().count();
            loc.col += before;
            loc.offset += before;
            loc.len = text[r.offset..r.offset + r.len].chars().count();
        }
        let diag = Diagnostic::error(
            "unknown-substitution",
            format!("unknown substitution `${{{}}}` in {what}", r.name),
            Some(loc),
        );
        let hint = match did_you_mean(&r.name, known.iter().map(String::as_str)) {
            Some(m) => format!("did you mean `${{{m}}}`?"),
            None if ports.is_empty() => format!(
                "known: {}; a named port must be declared in `ports:` first",
                known
                    .iter()
                    .map(|k| format!("${{{k}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => format!(
                "known: {}",
                known
                    .iter()
                    .map(|k| format!("${{{k}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        d.push(diag.with_hint(hint));
    }
}

/// A service, or with `is_job` a job (`jobs:`): the same fields, less those that only make
/// sense for something that stays up, plus [`Job`]'s.
fn service(n: &Node, is_job: bool, map: &mut SourceMap, d: &mut D) -> Option<Service> {
    let kind = if is_job { "job" } else { "service" };
    let what = match item_name(n) {
        Some(s) => format!("{kind} `{s}`"),
        None => format!("a {kind}"),
    };
    let keys = if is_job { JOB_KEYS } else { SERVICE_KEYS };
    let f = Fields::new(n, &what, keys, d)?;
    let name_v = f
        .required("name", d)
        .and_then(|v| name(v, &format!("a {kind}"), d));
    // Jobs share the services' namespace, so their references are keyed alike.
    let prefix = format!("service:{}", name_v.as_deref().unwrap_or("?"));
    if let Some(v) = f.get("phase") {
        map.put(format!("{prefix}:phase"), &v.loc);
    }
    let job = if is_job {
        if f.get("command").is_none() {
            d.push(
                Diagnostic::error(
                    "missing-field",
                    format!("{what} is missing required field `command`"),
                    Some(n.loc.clone()),
                )
                .with_hint("a job runs its `command` to the end, e.g. `command: [\"sh\", \"-c\", \"./migrate\"]`"),
            );
        }
        Some(job_settings(&f, &what, map, &prefix, d))
    } else {
        None
    };
    let project = f.get("project").and_then(|v| {
        map.put(format!("{prefix}:project"), &v.loc);
        string(v, "`project`", d)
    });
    let phase = match f
        .get("phase")
        .and_then(|v| uint(v, "`phase`", d).map(|p| (p, v)))
    {
        Some((0, v)) => {
            d.push(Diagnostic::error(
                "bad-value",
                "phases start at 1",
                Some(v.loc.clone()),
            ));
            1
        }
        Some((p, _)) => p,
        None => 1,
    };
    let role = f
        .get("role")
        .and_then(|v| choice(v, "role", &["app", "validator", "replica", "light"], d))
        .map(|r| match r {
            "validator" => Role::Validator,
            "replica" => Role::Replica,
            "light" => Role::Light,
            _ => Role::App,
        })
        .unwrap_or_default();
    let validator_set = f.get("validator_set").and_then(|v| {
        let set = name(v, "a validator set", d)?;
        if role != Role::Validator {
            d.push(
                Diagnostic::error(
                    "bad-value",
                    format!("`validator_set` of {what} applies to validators only"),
                    Some(v.loc.clone()),
                )
                .with_hint("add `role: validator`, or remove `validator_set`"),
            );
        }
        Some(set)
    });
    let replicas = f
        .get("replicas")
        .and_then(|v| range(v, Kind::Count, "`replicas`", d))
        .unwrap_or(Range::exact(1));
    let placement = f
        .get("placement")
        .map(|v| placement(v, &what, &prefix, map, d))
        .unwrap_or_default();
    let resources = f
        .get("resources")
        .map(|v| resources(v, &format!("resources of {what}"), d))
        .unwrap_or_default();
    let ports: Vec<String> = match f.get("ports") {
        Some(v) => {
            let list = string_list(v, "`ports`", d);
            let mut out: Vec<String> = Vec::new();
            for (p, loc) in list {
                if !valid_port_name(&p) {
                    d.push(Diagnostic::error("bad-name", format!("`{p}` is not a valid port name"), Some(loc)).with_hint("port names are identifiers: letters, digits and `_`, e.g. `port`, `http`, `p2p`"));
                } else if subst::BUILTINS.contains(&p.as_str()) {
                    d.push(
                        Diagnostic::error(
                            "bad-name",
                            format!("`{p}` cannot be a port name: it is a built-in substitution"),
                            Some(loc),
                        )
                        .with_hint("pick another name, e.g. `http`"),
                    );
                } else if out.contains(&p) {
                    d.push(Diagnostic::error(
                        "duplicate-name",
                        format!("port `{p}` is declared twice in {what}"),
                        Some(loc),
                    ));
                } else {
                    out.push(p);
                }
            }
            out
        }
        None => Vec::new(),
    };
    let command: Vec<String> = match f.get("command") {
        Some(v) => match list(v, &format!("`command` of {what}"), d) {
            Some(items) => items
                .iter()
                .filter_map(|i| {
                    let s = string(i, "a command argument", d)?;
                    check_subst(i, &s, &ports, &format!("`command` of {what}"), d);
                    Some(s)
                })
                .collect(),
            None => Vec::new(),
        },
        None => Vec::new(),
    };
    let mut env = BTreeMap::new();
    if let Some(v) = f.get("env") {
        match v.map() {
            Some(entries) => {
                for (k, val) in entries {
                    let (Some(key), Some(value)) = (
                        string(k, "an environment variable name", d),
                        string(val, "an environment variable value", d),
                    ) else {
                        continue;
                    };
                    check_subst(val, &value, &ports, &format!("`env.{key}` of {what}"), d);
                    env.insert(key, value);
                }
            }
            None => d.push(Diagnostic::error(
                "wrong-type",
                format!(
                    "expected a mapping for `env` of {what}, found {}",
                    v.describe()
                ),
                Some(v.loc.clone()),
            )),
        }
    }
    let health = f.get("health").and_then(|v| health(v, &what, &ports, d));
    record_address_refs(&f, &prefix, map);
    let depends_on = refs(
        &f,
        "depends_on",
        &prefix,
        &format!("`depends_on` of {what}"),
        map,
        d,
    );
    let enabled = f
        .get("enabled")
        .and_then(|v| boolean(v, "`enabled`", d))
        .unwrap_or(true);
    let rollout = f
        .get("rollout")
        .and_then(|v| rollout(v, &what, d))
        .unwrap_or_default();
    let restart = if is_job {
        // A job's process ends; whether it runs again is the engine's decision (retries).
        Some("never")
    } else {
        f.get("restart")
            .and_then(|v| choice(v, "restart policy", &["always", "on-failure", "never"], d))
    };
    let restart = restart
        .map(|r| match r {
            "always" => RestartPolicy::Always,
            "never" => RestartPolicy::Never,
            _ => RestartPolicy::OnFailure,
        })
        .unwrap_or_default();
    let stop_grace_ms = f
        .get("stop_grace")
        .and_then(|v| time_ms(v, "`stop_grace`", d))
        .unwrap_or(10_000);
    let backup: Vec<String> = match f.get("backup") {
        Some(v) => match list(v, "`backup`", d) {
            Some(items) => items
                .iter()
                .filter_map(|i| {
                    let s = string(i, "a backup path", d)?;
                    check_subst(i, &s, &ports, &format!("`backup` of {what}"), d);
                    if !s.starts_with("${data_dir}") {
                        d.push(
                            Diagnostic::error(
                                "bad-value",
                                format!("backup path `{s}` is not under `${{data_dir}}`"),
                                Some(i.loc.clone()),
                            )
                            .with_hint(
                                "backups cover the instance's own data: write `${data_dir}/...`",
                            ),
                        );
                    }
                    Some(s)
                })
                .collect(),
            None => Vec::new(),
        },
        None => Vec::new(),
    };
    let description = f
        .get("description")
        .and_then(|v| string(v, "`description`", d));
    let container = match (f.get("image"), f.get("build")) {
        (Some(i), Some(b)) => {
            d.push(
                Diagnostic::error(
                    "bad-value",
                    format!("{what} has both `image:` and `build:`"),
                    Some(b.loc.clone()),
                )
                .with_hint("give one: the image to run, or the folder to build it from"),
            );
            let _ = i;
            None
        }
        (Some(i), None) => string(i, "`image`", d).map(ContainerImage::Image),
        (None, Some(b)) => string(b, "`build`", d).map(|path| ContainerImage::Build {
            path,
            file: b.loc.file,
        }),
        (None, None) => None,
    };
    let metrics = f.get("metrics").and_then(|v| metrics(v, &what, &ports, d));
    let user = f.get("user").and_then(|v| user_name(v, &what, d));
    let reload = f
        .get("reload")
        .map(|v| reload(v, &what, &ports, d))
        .unwrap_or_default();
    Some(Service {
        name: name_v?,
        project,
        phase,
        role,
        validator_set,
        replicas,
        placement,
        resources,
        command,
        env,
        ports,
        health,
        depends_on,
        enabled,
        rollout,
        restart,
        stop_grace_ms,
        backup,
        user,
        reload,
        container,
        metrics,
        job,
        description,
        location: n.loc.clone(),
    })
}

/// Where each `${address:S}` / `${addresses:S}` of a service's `command` and `env` is written
/// (`service:NAME:address:S`, the first one), so that validation can point at it.
fn record_address_refs(f: &Fields, prefix: &str, map: &mut SourceMap) {
    let mut nodes: Vec<&Node> = Vec::new();
    if let Some(items) = f.get("command").and_then(|v| v.seq()) {
        nodes.extend(items.iter());
    }
    if let Some(entries) = f.get("env").and_then(|v| v.map()) {
        nodes.extend(entries.iter().map(|(_, v)| v));
    }
    for n in nodes {
        let Some(text) = n.scalar() else { continue };
        for r in subst::references(text) {
            if let Some(Ok(a)) = subst::address_ref(&r.name) {
                let key = format!("{prefix}:address:{}", a.service);
                if map.at(&key).is_none() {
                    map.put(key, &n.loc);
                }
            }
        }
    }
}

/// `reload: {command: [ARGV...]}`: the argv, with the same substitutions as `command`.
fn reload(n: &Node, what: &str, ports: &[String], d: &mut D) -> Vec<String> {
    let Some(f) = Fields::new(n, format!("`reload` of {what}"), &["command"], d) else {
        return Vec::new();
    };
    let Some(v) = f.required("command", d) else {
        return Vec::new();
    };
    let argv: Vec<String> = list(v, &format!("`reload.command` of {what}"), d)
        .unwrap_or_default()
        .iter()
        .filter_map(|i| {
            let s = string(i, "a command argument", d)?;
            check_subst(i, &s, ports, &format!("`reload.command` of {what}"), d);
            Some(s)
        })
        .collect();
    if argv.is_empty() {
        d.push(Diagnostic::error(
            "bad-value",
            format!("`reload.command` of {what} is empty"),
            Some(v.loc.clone()),
        ));
    }
    argv
}

/// `user: NAME`: a POSIX user name (what `useradd` accepts by default), so that the name can
/// be handed to a provider as is. Whether the user exists is a fact of the host, checked
/// before an apply changes anything, not here (the spec crate reads no system files).
fn user_name(n: &Node, what: &str, d: &mut D) -> Option<String> {
    let s = string(n, "`user`", d)?;
    let mut chars = s.chars();
    let ok = s.len() <= 32
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !ok {
        d.push(
            Diagnostic::error(
                "bad-name",
                format!("`{s}` is not a user name (`user` of {what})"),
                Some(n.loc.clone()),
            )
            .with_hint("a user name is lower-case letters, digits, `_` and `-`, starting with a letter or `_`, at most 32 characters, e.g. `postgres`"),
        );
        return None;
    }
    Some(s)
}

/// `metrics: { port: NAME, path: /metrics }`: the port must be one of the service's named
/// ports (it is the one the deploy allocates, so that is the one to scrape) and the path a plain
/// absolute HTTP path.
fn metrics(n: &Node, what: &str, ports: &[String], d: &mut D) -> Option<Metrics> {
    let f = Fields::new(n, format!("`metrics` of {what}"), METRICS_KEYS, d)?;
    let declared = || match ports {
        [] => {
            "it declares no ports: add one to `ports:` first, e.g. `ports: [metrics]`".to_string()
        }
        _ => format!(
            "its ports: {}",
            ports
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let port = match f.get("port") {
        None => {
            let diag = Diagnostic::error(
                "missing-field",
                format!("`metrics` of {what} is missing required field `port`"),
                Some(n.loc.clone()),
            );
            d.push(match ports {
                [only] => diag.with_hint(format!("write `port: {only}`")),
                _ => diag.with_hint(format!(
                    "name the port that serves the metrics; {}",
                    declared()
                )),
            });
            None
        }
        Some(v) => string(v, "`metrics.port`", d).and_then(|p| {
            if ports.contains(&p) {
                return Some(p);
            }
            let bare = p.trim_start_matches("${").trim_end_matches('}');
            let hint = if ports.iter().any(|q| q == bare) {
                format!("write the port's name, `port: {bare}`, not a substitution")
            } else {
                match did_you_mean(bare, ports.iter().map(String::as_str)) {
                    Some(m) => format!("did you mean `{m}`? ({})", declared()),
                    None => declared(),
                }
            };
            d.push(
                Diagnostic::error(
                    "unknown-reference",
                    format!("`metrics.port` of {what} refers to unknown port `{p}`"),
                    Some(v.loc.clone()),
                )
                .with_hint(hint),
            );
            None
        }),
    };
    let path = match f.get("path") {
        None => Some(DEFAULT_METRICS_PATH.to_string()),
        Some(v) => string(v, "`metrics.path`", d).and_then(|p| {
            let problem = if !p.starts_with('/') {
                Some((
                    "it does not start with `/`",
                    format!("write `/{}`", p.trim_start_matches('/')),
                ))
            } else if p.contains("${") {
                Some((
                    "substitutions are not allowed here",
                    "the path is the same for every instance, e.g. `/metrics`".to_string(),
                ))
            } else if p.contains(['?', '#']) {
                Some((
                    "it has a query or fragment",
                    "give the path alone, e.g. `/metrics`".to_string(),
                ))
            } else if p.chars().any(|c| c.is_whitespace() || c.is_control()) {
                Some((
                    "it contains white space",
                    "give a URL path, e.g. `/metrics`".to_string(),
                ))
            } else {
                None
            };
            match problem {
                None => Some(p),
                Some((why, hint)) => {
                    d.push(
                        Diagnostic::error(
                            "bad-value",
                            format!("`{p}` is not a valid `metrics.path` of {what}: {why}"),
                            Some(v.loc.clone()),
                        )
                        .with_hint(hint),
                    );
                    None
                }
            }
        }),
    };
    Some(Metrics {
        port: port?,
        path: path?,
    })
}

fn valid_port_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

fn placement(n: &Node, what: &str, prefix: &str, map: &mut SourceMap, d: &mut D) -> Placement {
    let Some(f) = Fields::new(n, format!("placement of {what}"), PLACEMENT_KEYS, d) else {
        return Placement::default();
    };
    let tier = f
        .get("tier")
        .and_then(|v| choice(v, "tier", &["core", "regional", "edge"], d))
        .map(|t| match t {
            "core" => Tier::Core,
            "regional" => Tier::Regional,
            _ => Tier::Edge,
        });
    let sites = match f.get("sites") {
        Some(v) => string_list(v, "`placement.sites`", d)
            .into_iter()
            .enumerate()
            .map(|(i, (s, loc))| {
                map.put(format!("{prefix}:placement.sites:{i}"), &loc);
                s
            })
            .collect(),
        None => Vec::new(),
    };
    let spread = f
        .get("spread")
        .and_then(|v| choice(v, "spread", &["site", "host", "none"], d))
        .map(|s| match s {
            "site" => Spread::Site,
            "host" => Spread::Host,
            _ => Spread::None,
        })
        .unwrap_or_default();
    Placement {
        tier,
        sites,
        spread,
    }
}

fn health(n: &Node, what: &str, ports: &[String], d: &mut D) -> Option<Health> {
    let f = Fields::new(n, format!("health of {what}"), HEALTH_KEYS, d)?;
    let mut checks = Vec::new();
    let expect_status = match f.get("expect_status") {
        Some(v) => match uint(v, "`expect_status`", d) {
            Some(s) if (100..=599).contains(&s) => s as u16,
            Some(_) => {
                d.push(Diagnostic::error(
                    "bad-value",
                    "`expect_status` must be an HTTP status (100-599)",
                    Some(v.loc.clone()),
                ));
                200
            }
            None => 200,
        },
        None => 200,
    };
    if let Some(v) = f.get("http") {
        if let Some(url) = string(v, "`health.http`", d) {
            check_subst(v, &url, ports, &format!("`health.http` of {what}"), d);
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                d.push(
                    Diagnostic::error(
                        "bad-value",
                        format!("`{url}` is not an http:// URL"),
                        Some(v.loc.clone()),
                    )
                    .with_hint("e.g. `http://127.0.0.1:${port}/health`"),
                );
            }
            checks.push(HealthCheck::Http { url, expect_status });
        }
    } else if let Some(v) = f.get("expect_status") {
        d.push(
            Diagnostic::error(
                "bad-value",
                "`expect_status` applies only to an `http` check",
                Some(v.loc.clone()),
            )
            .with_hint("add `http: \"http://127.0.0.1:${port}/\"` or remove `expect_status`"),
        );
    }
    if let Some(v) = f.get("tcp")
        && let Some(address) = string(v, "`health.tcp`", d)
    {
        check_subst(v, &address, ports, &format!("`health.tcp` of {what}"), d);
        checks.push(HealthCheck::Tcp { address });
    }
    if let Some(v) = f.get("command")
        && let Some(items) = list(v, "`health.command`", d)
    {
        let argv: Vec<String> = items
            .iter()
            .filter_map(|i| {
                let s = string(i, "a command argument", d)?;
                check_subst(i, &s, ports, &format!("`health.command` of {what}"), d);
                Some(s)
            })
            .collect();
        if argv.is_empty() {
            d.push(Diagnostic::error(
                "bad-value",
                "`health.command` is empty",
                Some(v.loc.clone()),
            ));
        } else {
            checks.push(HealthCheck::Command { argv });
        }
    }
    health_kinds::extra_checks(&f, what, ports, &mut checks, d);
    let (timeout_ms, interval_ms) = health_timing(&f, what, d);
    if checks.is_empty() {
        if ["http", "tcp", "command"]
            .iter()
            .chain(health_kinds::KEYS.iter())
            .all(|k| f.get(k).is_none())
        {
            d.push(
                Diagnostic::error(
                    "missing-field",
                    format!("health of {what} has no check"),
                    Some(n.loc.clone()),
                )
                .with_hint(
                    "give at least one of `http`, `tcp`, `command`, `json`, `metrics` or `ledger`",
                ),
            );
        }
        return None;
    }
    Some(Health {
        checks,
        timeout_ms,
        interval_ms,
    })
}

/// Default give-up time of a health gate (the core's default, 30 s).
const HEALTH_TIMEOUT_MS: u64 = 30_000;
/// Default probe period of a health gate (500 ms).
const HEALTH_INTERVAL_MS: u64 = 500;
/// Shortest probe period: a shorter `interval` is raised to this.
const HEALTH_MIN_INTERVAL_MS: u64 = 10;

/// `timeout` and `interval` of a health gate, in milliseconds. A zero timeout fails every
/// gate before the first probe ("not healthy after 0 ms"), a zero interval would probe in a
/// busy loop, and an interval longer than the timeout gives up before the second probe: all
/// three are errors here rather than failed applies later.
fn health_timing(f: &Fields<'_>, what: &str, d: &mut D) -> (u64, u64) {
    let timeout_v = f.get("timeout");
    let interval_v = f.get("interval");
    let timeout = timeout_v.and_then(|v| time_ms(v, "`health.timeout`", d));
    let interval = interval_v.and_then(|v| time_ms(v, "`health.interval`", d));
    if let (Some(0), Some(v)) = (timeout, timeout_v) {
        d.push(
            Diagnostic::error(
                "bad-value",
                format!("health of {what} has `timeout: 0`: every gate would fail before its first probe"),
                Some(v.loc.clone()),
            )
            .with_hint(
                "give the check time to pass, e.g. `timeout: 30s` (the default when `timeout` is left out)",
            ),
        );
    }
    if let (Some(0), Some(v)) = (interval, interval_v) {
        d.push(
            Diagnostic::error(
                "bad-value",
                format!("health of {what} has `interval: 0`: it would probe without pause"),
                Some(v.loc.clone()),
            )
            .with_hint("probe every so often, e.g. `interval: 500ms` (the default when `interval` is left out)"),
        );
    }
    let timeout_ms = timeout.unwrap_or(HEALTH_TIMEOUT_MS);
    let interval_ms = interval.unwrap_or(HEALTH_INTERVAL_MS);
    if timeout_ms > 0 && interval_ms > timeout_ms {
        let shorter =
            fmt_ms((timeout_ms / 10).clamp(HEALTH_MIN_INTERVAL_MS.min(timeout_ms), timeout_ms));
        // Point at the interval when it was written, else at the timeout that undercuts the
        // default interval.
        let (at, msg, hint) = match (interval_v.filter(|_| interval.is_some()), timeout_v) {
            (Some(iv), _) => (
                iv,
                format!(
                    "health of {what} probes every {} but gives up after {}: it would give up before the second probe",
                    fmt_ms(interval_ms),
                    fmt_ms(timeout_ms)
                ),
                format!(
                    "make `interval` at most the timeout, e.g. `interval: {shorter}`, or raise `timeout`"
                ),
            ),
            (None, Some(tv)) => (
                tv,
                format!(
                    "health of {what} gives up after {}, before the default probe interval of {} has passed once",
                    fmt_ms(timeout_ms),
                    fmt_ms(interval_ms)
                ),
                format!("raise `timeout`, or probe more often, e.g. `interval: {shorter}`"),
            ),
            // Both defaults: the interval is below the timeout.
            (None, None) => return (timeout_ms, interval_ms),
        };
        d.push(Diagnostic::error("bad-value", msg, Some(at.loc.clone())).with_hint(hint));
    }
    (timeout_ms, interval_ms.max(HEALTH_MIN_INTERVAL_MS))
}

/// Milliseconds in the largest unit that writes them as a whole number: `500ms`, `20s`, `5m`.
fn fmt_ms(ms: u64) -> String {
    match ms {
        0 => "0s".to_string(),
        _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1_000) => format!("{}s", ms / 1_000),
        _ => format!("{ms}ms"),
    }
}

fn rollout(n: &Node, what: &str, d: &mut D) -> Option<Rollout> {
    let f = Fields::new(n, format!("rollout of {what}"), ROLLOUT_KEYS, d)?;
    let strategy = f.required("strategy", d).and_then(|v| {
        choice(
            v,
            "rollout strategy",
            &["rolling", "blue-green", "canary"],
            d,
        )
    })?;
    let allowed: &[&str] = match strategy {
        "rolling" => &["max_unavailable", "max_surge"],
        "canary" => &["canary", "analysis"],
        _ => &[],
    };
    for key in ["max_unavailable", "max_surge", "canary", "analysis"] {
        if let Some(v) = f.get(key)
            && !allowed.contains(&key)
        {
            d.push(Diagnostic::error(
                "bad-value",
                format!("`{key}` does not apply to the `{strategy}` strategy"),
                Some(v.loc.clone()),
            ));
        }
    }
    let num = |key: &str, default: u32, d: &mut D| {
        f.get(key)
            .and_then(|v| uint(v, &format!("`{key}`"), d))
            .unwrap_or(default)
    };
    Some(match strategy {
        "rolling" => {
            let max_unavailable = num("max_unavailable", 1, d);
            let max_surge = num("max_surge", 0, d);
            if max_unavailable == 0 && max_surge == 0 {
                d.push(
                    Diagnostic::error(
                        "bad-value",
                        format!("rolling rollout of {what} can make no progress"),
                        Some(n.loc.clone()),
                    )
                    .with_hint("allow `max_unavailable` or `max_surge` to be at least 1"),
                );
            }
            Rollout::Rolling {
                max_unavailable,
                max_surge,
            }
        }
        "canary" => Rollout::Canary {
            canary: num("canary", 1, d).max(1),
            analysis_ms: f
                .get("analysis")
                .and_then(|v| time_ms(v, "`analysis`", d))
                .unwrap_or(30_000),
        },
        _ => Rollout::BlueGreen,
    })
}
