//! Plans spec files and prints the plan, without the CLI:
//! `cargo run -p phoenix-plan --example show -- table|json|markdown|dot FILE... [--env NAME]`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (format, rest) = args
        .split_first()
        .expect("usage: show FORMAT FILE... [--env NAME]");
    let env = rest
        .iter()
        .position(|a| a == "--env")
        .map(|i| rest[i + 1].clone());
    let files: Vec<&String> = rest.iter().take_while(|a| *a != "--env").collect();
    let fleet = match phoenix_spec::load_files(&files, env.as_deref()) {
        Ok(f) => f,
        Err(d) => {
            eprint!("{}", d.render());
            std::process::exit(1);
        }
    };
    let plan = phoenix_plan::plan(&fleet);
    let text = match format.as_str() {
        "json" => phoenix_plan::to_json_string(&plan),
        "markdown" => phoenix_plan::render::markdown(&plan),
        "dot" => phoenix_plan::render::dot(&plan),
        _ => phoenix_plan::render::table(&plan),
    };
    print!("{text}");
}
