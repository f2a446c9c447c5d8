//! The crate's layering, checked from its source: no two files under
//! `src/` import each other, directly or through a loop; no two top-level
//! modules either; the codec (`src/lite/`) imports nothing else of the
//! crate; the model (`src/model.rs`) imports only the codec.
//!
//! An import is any path into the crate: a `use`, a `pub use` re-export or
//! a path in code (`crate::a::B`, `super::B`, `child::f()`). A path to an
//! item that a module only re-exports counts as an import of the file that
//! defines it, so a facade `mod.rs` does not hide (or invent) a loop.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Imports that close a loop today, each with the work that removes it.
/// The test fails when one of them disappears, so that this list only
/// shrinks: delete the entry when its import is gone.
const KNOWN_CYCLE_EDGES: &[(&str, &str)] = &[];

/// Top-level module edges allowed to close a loop, for the same reasons.
const KNOWN_MODULE_CYCLE_EDGES: &[(&str, &str)] = &[];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Path, // ::
    Open,
    Close,
    Comma,
    Star,
    Semi,
    Other(char),
}

/// Rust source as tokens, comments and literals dropped.
fn tokens(source: &str) -> Vec<Token> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && raw_string_at(&chars, i) {
            i += 1;
            let mut hashes = 0;
            while chars[i] == '#' {
                hashes += 1;
                i += 1;
            }
            i += 1; // the opening quote
            loop {
                if i >= chars.len() {
                    break;
                }
                if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                i += 1;
            }
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}'), else a lifetime.
            if next == Some('\\') {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
        } else {
            i += 1;
            out.push(match c {
                ':' if next == Some(':') => {
                    i += 1;
                    Token::Path
                }
                '{' => Token::Open,
                '}' => Token::Close,
                ',' => Token::Comma,
                '*' => Token::Star,
                ';' => Token::Semi,
                c if c.is_whitespace() => continue,
                c => Token::Other(c),
            });
        }
    }
    out
}

fn raw_string_at(chars: &[char], i: usize) -> bool {
    // r"..." or r#"..."#, not an identifier that starts with r.
    if i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_') {
        return false;
    }
    let mut j = i + 1;
    while chars.get(j) == Some(&'#') {
        j += 1;
    }
    chars.get(j) == Some(&'"')
}

/// One parsed path of a use tree: its segments and the name it is seen by.
#[derive(Debug, Clone)]
struct UsePath {
    segments: Vec<String>,
    alias: Option<String>,
    /// `path::*`: binds every name of the module, none by itself.
    glob: bool,
}

/// Parse a use tree at `at` (after a leading `prefix` of segments); returns
/// every leaf path and the position after the tree.
fn parse_tree(toks: &[Token], mut at: usize, prefix: Vec<String>) -> (Vec<UsePath>, usize) {
    let mut segments = prefix;
    loop {
        match toks.get(at) {
            Some(Token::Ident(name)) => {
                segments.push(name.clone());
                at += 1;
            }
            Some(Token::Open) => {
                let mut leaves = Vec::new();
                at += 1;
                loop {
                    match toks.get(at) {
                        Some(Token::Close) => return (leaves, at + 1),
                        Some(Token::Comma) => at += 1,
                        None => return (leaves, at),
                        _ => {
                            let (more, next) = parse_tree(toks, at, segments.clone());
                            leaves.extend(more);
                            if next == at {
                                at += 1;
                            } else {
                                at = next;
                            }
                        }
                    }
                }
            }
            Some(Token::Star) => {
                return (
                    vec![UsePath {
                        segments,
                        alias: None,
                        glob: true,
                    }],
                    at + 1,
                )
            }
            _ => {
                return (
                    vec![UsePath {
                        segments,
                        alias: None,
                        glob: false,
                    }],
                    at,
                )
            }
        }
        match toks.get(at) {
            Some(Token::Path) => at += 1,
            Some(Token::Ident(kw)) if kw == "as" => {
                let alias = match toks.get(at + 1) {
                    Some(Token::Ident(alias)) => Some(alias.clone()),
                    _ => None,
                };
                let leaf = UsePath {
                    segments,
                    alias,
                    glob: false,
                };
                return (vec![leaf], at + 2);
            }
            _ => {
                return (
                    vec![UsePath {
                        segments,
                        alias: None,
                        glob: false,
                    }],
                    at,
                )
            }
        }
    }
}

/// A path from the crate root: module names, then maybe an item.
type ModulePath = Vec<String>;

struct SourceFile {
    /// `src/...`, as reported.
    name: String,
    module: Vec<String>,
    toks: Vec<Token>,
    children: BTreeSet<String>,
}

impl SourceFile {
    /// An absolute module path for a path written in this file, or `None`
    /// for a path outside the crate.
    /// `inline` names the inline modules (`mod tests { .. }`) the path is in.
    fn absolute(&self, segments: &[String], inline: &[String]) -> Option<Vec<String>> {
        let first = segments.first()?;
        let here: Vec<String> = self.module.iter().chain(inline).cloned().collect();
        let mut base = match first.as_str() {
            "crate" => Vec::new(),
            "self" => here,
            "super" => {
                let mut m = here;
                m.pop();
                m
            }
            child if inline.is_empty() && self.children.contains(child) => {
                let mut m = here;
                m.push(child.to_string());
                m
            }
            _ => return None,
        };
        let mut rest = &segments[1..];
        while rest.first().is_some_and(|s| s == "super") {
            base.pop();
            rest = &rest[1..];
        }
        base.extend(rest.iter().filter(|s| *s != "self").cloned());
        Some(base)
    }

    /// Every crate path this file names, absolute; and the names its `use`
    /// declarations bind at file level (what a child reaches by `super::`
    /// and another module by a re-export).
    fn paths(&self) -> (Vec<ModulePath>, Vec<(String, ModulePath)>) {
        let toks = &self.toks;
        let mut paths = Vec::new();
        let mut bindings = Vec::new();
        // Inline modules open here, with the brace depth inside each.
        let mut inline: Vec<(String, usize)> = Vec::new();
        let mut depth = 0usize;
        let mut at = 0;
        while at < toks.len() {
            match &toks[at] {
                Token::Open => depth += 1,
                Token::Close => {
                    if inline.last().is_some_and(|(_, d)| *d == depth) {
                        inline.pop();
                    }
                    depth = depth.saturating_sub(1);
                }
                Token::Ident(m) if m == "mod" => {
                    if let (Some(Token::Ident(name)), Some(Token::Open)) =
                        (toks.get(at + 1), toks.get(at + 2))
                    {
                        inline.push((name.clone(), depth + 1));
                    }
                }
                _ => {}
            }
            let names: Vec<String> = inline.iter().map(|(n, _)| n.clone()).collect();
            let is_use = matches!(&toks[at], Token::Ident(k) if k == "use");
            if is_use {
                let (leaves, next) = parse_tree(toks, at + 1, Vec::new());
                for leaf in leaves {
                    let Some(abs) = self.absolute(&leaf.segments, &names) else {
                        continue;
                    };
                    if names.is_empty() && !leaf.glob {
                        // `a::{self}` binds `a`.
                        let mut named = leaf.segments.iter().rev();
                        let last = named.next().filter(|s| *s != "self");
                        let name = leaf
                            .alias
                            .clone()
                            .or_else(|| last.or_else(|| named.next()).cloned());
                        if let Some(name) = name {
                            bindings.push((name, abs.clone()));
                        }
                    }
                    paths.push(abs);
                }
                at = next.max(at + 1);
                continue;
            }
            let starts_path = match &toks[at] {
                Token::Ident(name) => {
                    matches!(name.as_str(), "crate" | "super" | "self")
                        || self.children.contains(name)
                }
                _ => false,
            };
            let after_path = at > 0 && matches!(toks[at - 1], Token::Path);
            if starts_path && !after_path && toks.get(at + 1) == Some(&Token::Path) {
                let (leaves, next) = parse_tree(toks, at, Vec::new());
                paths.extend(
                    leaves
                        .iter()
                        .filter_map(|l| self.absolute(&l.segments, &names)),
                );
                at = next.max(at + 1);
                continue;
            }
            at += 1;
        }
        (paths, bindings)
    }
}

struct Crate {
    files: Vec<SourceFile>,
    by_module: BTreeMap<Vec<String>, usize>,
    bindings: Vec<BTreeMap<String, Vec<String>>>,
    paths: Vec<Vec<Vec<String>>>,
}

impl Crate {
    fn load() -> Self {
        let src = src_dir();
        let mut names = Vec::new();
        collect(&src, &mut names);
        names.sort();
        let mut files = Vec::new();
        for path in names {
            let rel = path.strip_prefix(&src).unwrap().to_path_buf();
            // The binary is its own crate; it reaches the library as `qumo::`.
            if rel == Path::new("main.rs") {
                continue;
            }
            let mut module: Vec<String> = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
                module.pop();
            }
            let source = std::fs::read_to_string(&path).unwrap();
            let toks = tokens(&source);
            let children = toks
                .windows(3)
                .filter_map(|w| match w {
                    [Token::Ident(m), Token::Ident(name), Token::Semi] if m == "mod" => {
                        Some(name.clone())
                    }
                    _ => None,
                })
                .collect();
            files.push(SourceFile {
                name: format!("src/{}", rel.display()),
                module,
                toks,
                children,
            });
        }
        let by_module = files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.module.clone(), i))
            .collect();
        let mut bindings = Vec::new();
        let mut paths = Vec::new();
        for file in &files {
            let (p, r) = file.paths();
            paths.push(p);
            bindings.push(r.into_iter().collect());
        }
        Crate {
            files,
            by_module,
            bindings,
            paths,
        }
    }

    /// The file that defines what `path` names, following re-exports.
    fn resolve(&self, path: &[String], depth: usize) -> Option<usize> {
        let (file, rest) = (0..=path.len())
            .rev()
            .find_map(|n| self.by_module.get(&path[..n]).map(|&f| (f, &path[n..])))?;
        let Some(first) = rest.first() else {
            return Some(file);
        };
        match self.bindings[file].get(first) {
            Some(target) if depth < 16 => {
                let mut target = target.clone();
                target.extend(rest[1..].iter().cloned());
                self.resolve(&target, depth + 1).or(Some(file))
            }
            _ => Some(file),
        }
    }

    /// File imports: `edges[a]` holds every file `a` names.
    fn edges(&self) -> Vec<BTreeSet<usize>> {
        self.paths
            .iter()
            .enumerate()
            .map(|(from, paths)| {
                paths
                    .iter()
                    .filter_map(|p| self.resolve(p, 0))
                    .filter(|&to| to != from)
                    .collect()
            })
            .collect()
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.files.iter().position(|f| f.name == name)
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A loop in `edges`, as the nodes along it, if there is one.
fn find_cycle(edges: &[BTreeSet<usize>]) -> Option<Vec<usize>> {
    // 0 unvisited, 1 on the current path, 2 done.
    fn visit(
        n: usize,
        edges: &[BTreeSet<usize>],
        state: &mut [u8],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        state[n] = 1;
        stack.push(n);
        for &m in &edges[n] {
            if state[m] == 1 {
                let from = stack.iter().position(|&s| s == m).unwrap();
                let mut cycle = stack[from..].to_vec();
                cycle.push(m);
                return Some(cycle);
            }
            if state[m] == 0 {
                if let Some(cycle) = visit(m, edges, state, stack) {
                    return Some(cycle);
                }
            }
        }
        stack.pop();
        state[n] = 2;
        None
    }
    let mut state = vec![0u8; edges.len()];
    (0..edges.len()).find_map(|n| {
        if state[n] == 0 {
            visit(n, edges, &mut state, &mut Vec::new())
        } else {
            None
        }
    })
}

/// Every loop found, each named; breaking one edge of each before looking
/// again, so that one failure lists what there is to fix.
fn all_cycles(mut edges: Vec<BTreeSet<usize>>, name: impl Fn(usize) -> String) -> Vec<String> {
    let mut loops = Vec::new();
    while let Some(cycle) = find_cycle(&edges) {
        let names: Vec<String> = cycle.iter().map(|&n| name(n)).collect();
        loops.push(names.join(" -> "));
        let (a, b) = (cycle[cycle.len() - 2], cycle[cycle.len() - 1]);
        edges[a].remove(&b);
    }
    loops
}

#[test]
fn no_two_files_import_each_other() {
    let krate = Crate::load();
    let mut edges = krate.edges();
    for (from, to) in KNOWN_CYCLE_EDGES {
        let (Some(a), Some(b)) = (krate.index(from), krate.index(to)) else {
            panic!("KNOWN_CYCLE_EDGES names a file that is gone: {from} -> {to}; delete it");
        };
        assert!(
            edges[a].remove(&b),
            "{from} no longer imports {to}: delete it from KNOWN_CYCLE_EDGES"
        );
    }
    let loops = all_cycles(edges, |n| krate.files[n].name.clone());
    assert!(loops.is_empty(), "import loops:\n{}", loops.join("\n"));
}

#[test]
fn no_two_top_level_modules_import_each_other() {
    let krate = Crate::load();
    let top = |file: usize| {
        krate.files[file]
            .module
            .first()
            .cloned()
            .unwrap_or_else(|| "lib".into())
    };
    let names: Vec<String> = (0..krate.files.len())
        .map(top)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let index = |name: &str| names.iter().position(|n| n == name);
    let mut edges = vec![BTreeSet::new(); names.len()];
    for (from, targets) in krate.edges().iter().enumerate() {
        let a = index(&top(from)).unwrap();
        for &to in targets {
            let b = index(&top(to)).unwrap();
            // The crate root declares every module; that is not an import.
            if a != b && names[a] != "lib" {
                edges[a].insert(b);
            }
        }
    }
    for (from, to) in KNOWN_MODULE_CYCLE_EDGES {
        let (a, b) = (index(from).unwrap(), index(to).unwrap());
        assert!(
            edges[a].remove(&b),
            "{from} no longer imports {to}: delete it from KNOWN_MODULE_CYCLE_EDGES"
        );
    }
    let loops = all_cycles(edges, |n| names[n].clone());
    assert!(
        loops.is_empty(),
        "module import loops:\n{}",
        loops.join("\n")
    );
}

/// Every file `file` imports outside the files `allowed` accepts.
fn imports_outside(krate: &Crate, file: usize, allowed: impl Fn(&str) -> bool) -> Vec<String> {
    krate.edges()[file]
        .iter()
        .map(|&to| krate.files[to].name.clone())
        .filter(|name| !allowed(name))
        .collect()
}

#[test]
fn the_codec_imports_nothing_of_the_relay() {
    let krate = Crate::load();
    for (i, file) in krate.files.iter().enumerate() {
        if !file.name.starts_with("src/lite/") {
            continue;
        }
        let outside = imports_outside(&krate, i, |name| name.starts_with("src/lite/"));
        assert!(outside.is_empty(), "{} imports {outside:?}", file.name);
        let runtime = file
            .toks
            .iter()
            .any(|t| matches!(t, Token::Ident(name) if name == "qumo_shards" || name == "monoio"));
        assert!(
            !runtime,
            "{} uses the runtime; the codec is pure",
            file.name
        );
    }
}

/// The codecs: moq-lite's, and the IETF one (a frame's extension headers
/// name their draft), which itself imports only moq-lite's.
#[test]
fn the_model_imports_only_the_codecs() {
    let krate = Crate::load();
    let model = krate.index("src/model.rs").expect("src/model.rs");
    let outside = imports_outside(&krate, model, |name| {
        name.starts_with("src/lite/") || name.starts_with("src/ietf/")
    });
    assert!(outside.is_empty(), "src/model.rs imports {outside:?}");
}

/// The checker itself: a loop through a re-export and a `super::` path is
/// found, and a lone mutual import is named.
#[test]
fn the_checker_sees_paths_through_bindings_groups_and_super() {
    let toks = tokens(
        "// use crate::commented::Out;\n\
         use crate::a::{b::C, d::{self, E as F}};\n\
         pub use child::G;\n\
         fn f() { let s = \"crate::in_string\"; super::h::i(); crate::j::K::new(); }",
    );
    let file = SourceFile {
        name: "src/x/mod.rs".into(),
        module: vec!["x".into()],
        toks,
        children: ["child".to_string()].into(),
    };
    let (paths, bindings) = file.paths();
    let paths: BTreeSet<String> = paths.iter().map(|p| p.join("::")).collect();
    let expected: BTreeSet<String> = [
        "a::b::C",
        "a::d",
        "a::d::E",
        "x::child::G",
        "h::i",
        "j::K::new",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(paths, expected);
    let bound: BTreeSet<&str> = bindings.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(bound, BTreeSet::from(["C", "d", "F", "G"]));

    let two = vec![BTreeSet::from([1]), BTreeSet::from([0])];
    assert_eq!(find_cycle(&two), Some(vec![0, 1, 0]));
    let chain = vec![BTreeSet::from([1]), BTreeSet::from([2]), BTreeSet::new()];
    assert_eq!(find_cycle(&chain), None);
}
