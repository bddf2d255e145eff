//! `husk top`: a running container's processes as `ps -ef` shows them
//! (`runtime::tools::top`; PIDs as the container sees them, under both isolations).

use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;

use crate::human;

/// `husk top`.
#[derive(Args, Debug)]
pub struct TopArgs {
    /// Container (name, ID or ID prefix).
    container: String,
    /// ps options (not supported: the columns are always `ps -ef`'s).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    ps_options: Vec<String>,
}

/// `husk top`.
pub fn top(a: TopArgs, root: &Path) -> anyhow::Result<ExitCode> {
    if !a.ps_options.is_empty() && a.ps_options != ["-ef"] {
        bail!("husk top shows the columns of ps -ef only; ps options are not supported");
    }
    let top = runtime::tools::top(root, &a.container)?;
    let mut rows = vec![top.titles];
    rows.extend(top.processes);
    print!("{}", human::table(&rows));
    Ok(ExitCode::SUCCESS)
}
