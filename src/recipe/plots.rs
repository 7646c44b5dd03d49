//! The training curves a recipe draws into `plots/` (the same scalars are in
//! `metrics.jsonl` and the TensorBoard events).

use std::path::Path;

use crate::Result;
use crate::plot::{Panel, figure, line_chart};
use crate::train::grpo_trainer::GrpoMetrics;
use crate::train::sft::StepMetrics;
use crate::util::io_err;

fn save(chart: image::RgbImage, path: &Path) -> Result<()> {
    chart.save(path).map_err(|e| crate::arg_err!("plot", "{}: {e}", path.display()))
}

/// SFT: loss, learning rate, gradient norm.
pub(super) fn sft(h: &[StepMetrics], dir: &Path) -> Result<()> {
    let curve = |f: &dyn Fn(&StepMetrics) -> f64| h.iter().map(|m| (m.step as f64, f(m))).collect::<Vec<_>>();
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    for (file, title, series) in [
        ("sft_loss.png", "SFT loss (token mean)", curve(&|m| m.loss)),
        ("sft_lr.png", "learning rate", curve(&|m| m.lr as f64)),
        ("sft_grad_norm.png", "gradient norm (before clipping)", curve(&|m| m.grad_norm)),
    ] {
        save(line_chart(title, "step", &[(title, series)])?, &dir.join(file))?;
    }
    Ok(())
}

/// GRPO: one chart per scalar, and the paper's training panels on one figure
/// (`grpo.png`).
pub(super) fn grpo(h: &[GrpoMetrics], dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let curve = |f: &dyn Fn(&GrpoMetrics) -> f64| h.iter().map(|m| (m.step as f64, f(m))).collect::<Vec<_>>();
    type Series<'a> = Vec<(&'a str, Vec<(f64, f64)>)>;
    let charts: [(&str, &str, Series); 5] = [
        ("grpo_reward.png", "GRPO reward (mean over samples)", vec![("reward", curve(&|m| m.reward_mean))]),
        (
            "grpo_accuracy_format.png",
            "GRPO accuracy and format rate",
            vec![("accuracy", curve(&|m| m.accuracy)), ("format", curve(&|m| m.format_rate))],
        ),
        ("grpo_kl.png", "KL to the reference (k3, mean per token)", vec![("kl", curve(&|m| m.kl))]),
        ("grpo_response_length.png", "response length (tokens)", vec![("length", curve(&|m| m.response_len_mean))]),
        ("grpo_entropy.png", "policy entropy (nats per token)", vec![("entropy", curve(&|m| m.entropy))]),
    ];
    for (file, title, series) in &charts {
        save(line_chart(title, "step", series)?, &dir.join(file))?;
    }
    let panels: Vec<Panel> = charts.iter().map(|(_, title, series)| Panel { title, series: series.clone() }).collect();
    save(figure(&panels, 3, "step")?, &dir.join("grpo.png"))
}
