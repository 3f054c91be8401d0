//! `sidetrace inject`: read, decide, print; notes and errors on stderr.

use std::{
    io::{Read, Write},
    process::ExitCode,
};

use super::{manifest, sidecar::Injector, values::ChartValues, Action};
use crate::cli::InjectArgs;

/// Runs the command: manifests on stdout, one note per pod template and a
/// summary on stderr. Exits 2 when the input or the values cannot be used
/// (nothing is printed then), 1 when reading or writing fails.
pub fn run(args: InjectArgs) -> ExitCode {
    let values = match ChartValues::load(&args.values) {
        Ok(v) => v,
        Err(e) => return fail(2, &format!("values: {e}")),
    };
    let injector = match Injector::new(&values, &args.release) {
        Ok(i) => i,
        Err(e) => return fail(2, &e.to_string()),
    };
    let (name, input) = match args.file.as_deref() {
        None => ("stdin".to_string(), read_stdin()),
        Some(p) if p.as_os_str() == "-" => ("stdin".to_string(), read_stdin()),
        Some(p) => (p.display().to_string(), std::fs::read_to_string(p)),
    };
    let input = match input {
        Ok(text) => text,
        Err(e) => return fail(1, &format!("cannot read {name}: {e}")),
    };
    let action = if args.uninject {
        Action::Uninject
    } else {
        Action::Inject {
            mode: args.mode,
            app_port: args.app_port,
        }
    };
    let report = match manifest::process(&input, &injector, action) {
        Ok(r) => r,
        Err(e) => return fail(2, &format!("{name}: {e}")),
    };
    let mut stderr = std::io::stderr().lock();
    for note in &report.notes {
        let _ = writeln!(stderr, "{name}: {note}");
    }
    let verb = if args.uninject {
        "uninjected"
    } else {
        "injected"
    };
    let _ = writeln!(
        stderr,
        "{name}: {} pod template(s) {verb}, {} unchanged, {} other document(s) passed through",
        report.changed, report.unchanged, report.others
    );
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(report.output.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away (`| head`) took what it wanted.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(1, &format!("cannot write the manifests: {e}")),
    }
}

fn read_stdin() -> std::io::Result<String> {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s)?;
    Ok(s)
}

fn fail(code: u8, message: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "sidetrace inject: {message}");
    ExitCode::from(code)
}
