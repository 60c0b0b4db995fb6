//! `pbft status`: where every validator stands, as a table or as JSON.

use crate::error::{Error, Outcome, Result};
use crate::ready::StatusSource;
use pbft_client::Client;
use pbft_cluster::Cluster;
use pbft_protocol::NodeStatus;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

/// `pbft status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// The cluster file.
    #[arg(long)]
    pub cluster: PathBuf,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// Asks every validator of the cluster for its status and prints it; unsuccessful if
/// one did not answer.
pub fn run(args: &StatusArgs) -> Result<Outcome> {
    let cluster = Cluster::load(&args.cluster)?;
    let rows = crate::runtime()?.block_on(async {
        let mut client = Client::connect(&cluster).await?;
        let s = client.statuses(Duration::from_secs(3)).await;
        client.close().await;
        Ok::<_, Error>(s?)
    })?;
    if args.json {
        println!("{}", render_json(&rows));
    } else {
        print!("{}", render_table(&rows, |_| String::new()));
    }
    Ok(Outcome::from_success(rows.iter().all(|(_, s)| s.is_some())))
}

/// One validator in `pbft status --json`.
#[derive(Debug, Serialize)]
pub struct StatusRow<'a> {
    /// Its id.
    pub validator: u32,
    /// Whether it answered.
    pub reachable: bool,
    /// What it said, if it answered.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub status: Option<Reported<'a>>,
}

/// What an answering validator reports in `pbft status --json`.
#[derive(Debug, Serialize)]
pub struct Reported<'a> {
    /// Its view.
    pub view: u64,
    /// Whether a view change is under way.
    pub changing_view: bool,
    /// Last executed sequence number.
    pub last_executed: u64,
    /// Last stable checkpoint.
    pub stable_checkpoint: u64,
    /// Its ledger head, hex.
    pub head: String,
    /// Whether it stopped taking part.
    pub halted: bool,
    /// The validators it holds signed evidence against.
    pub evidence_against: &'a [u32],
}

impl<'a> StatusRow<'a> {
    /// The row of validator `id`.
    pub fn new(id: u32, status: Option<&'a NodeStatus>) -> StatusRow<'a> {
        StatusRow {
            validator: id,
            reachable: status.is_some(),
            status: status.map(|s| Reported {
                view: s.view,
                changing_view: s.changing_view,
                last_executed: s.last_executed,
                stable_checkpoint: s.stable_checkpoint,
                head: s.head_hash.to_hex(),
                halted: s.halted.is_some(),
                evidence_against: &s.evidence_against,
            }),
        }
    }
}

/// The JSON array of `pbft status --json`, one object per validator, on one line.
pub fn render_json(rows: &[(u32, Option<NodeStatus>)]) -> String {
    let rows: Vec<StatusRow<'_>> = rows
        .iter()
        .map(|(id, s)| StatusRow::new(*id, s.as_ref()))
        .collect();
    serde_json::to_string(&rows).unwrap_or_default()
}

/// The status table for people; `role` labels each validator.
pub fn render_table(rows: &[(u32, Option<NodeStatus>)], role: impl Fn(u32) -> String) -> String {
    let mut out = format!(
        "{:<10} {:<10} {:<10} {:>6} {:>14} {:>11}  {:<16}\n",
        "validator", "role", "reachable", "view", "last executed", "checkpoint", "ledger head"
    );
    for (id, s) in rows {
        let _ = match s {
            Some(s) => writeln!(
                out,
                "{:<10} {:<10} {:<10} {:>6} {:>14} {:>11}  {:<16}{}",
                id,
                role(*id),
                "yes",
                format!("{}{}", s.view, if s.changing_view { "*" } else { "" }),
                s.last_executed,
                s.stable_checkpoint,
                &s.head_hash.to_hex()[..16],
                s.halted
                    .as_ref()
                    .map(|h| format!("  HALTED: {h}"))
                    .unwrap_or_default()
            ),
            None => writeln!(out, "{:<10} {:<10} {:<10}", id, role(*id), "no"),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ready::tests::status;

    fn rows() -> Vec<(u32, Option<NodeStatus>)> {
        let mut changing = status(1, 12);
        changing.view = 2;
        changing.changing_view = true;
        changing.stable_checkpoint = 8;
        changing.evidence_against = vec![0];
        changing.halted = Some("disk full".into());
        vec![(0, None), (1, Some(changing))]
    }

    /// The JSON that scripts and the end-to-end tests read: these keys, in this order;
    /// an unreachable validator has only the first two.
    #[test]
    fn json_rows_have_the_documented_shape() {
        let r = rows();
        let head = r[1].1.as_ref().expect("status").head_hash.to_hex();
        assert_eq!(
            render_json(&r),
            format!(
                "[{{\"validator\":0,\"reachable\":false}},{{\"validator\":1,\"reachable\":true,\"view\":2,\"changing_view\":true,\"last_executed\":12,\"stable_checkpoint\":8,\"head\":\"{head}\",\"halted\":true,\"evidence_against\":[0]}}]"
            )
        );
        assert_eq!(render_json(&[]), "[]");
    }

    #[test]
    fn the_table_marks_view_changes_and_halts() {
        let r = rows();
        let t = render_table(&r, |id| {
            if id == 0 {
                "traitor".into()
            } else {
                "honest".into()
            }
        });
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with("validator  role       reachable"),
            "{t}"
        );
        assert_eq!(lines[1], "0          traitor    no        ");
        let head = &r[1].1.as_ref().expect("status").head_hash.to_hex()[..16];
        assert_eq!(
            lines[2],
            format!("1          honest     yes            2*             12           8  {head}  HALTED: disk full")
        );
    }
}
