//! Run records (`run.json`): what a resume may and may not change.

use actial::train::config::SftConfig;
use actial::train::run_dir::{Claim, RunRecord, claim};

fn scratch(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("actial-run-dir-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A GRPO resume with another group size, prompts per step, beta or
/// temperature, or an SFT resume with another rendered scene, is refused with
/// the old and new values; more steps, another device or checkpoint cadence
/// are not changes of the run.
#[test]
fn a_resume_refuses_changed_grpo_and_data_settings() {
    let d = scratch("grpo");
    let base = SftConfig::embedded_defaults();
    claim(&d, &RunRecord::new("grpo", &base).unwrap(), Claim::Fresh).unwrap();
    let changed = |f: &dyn Fn(&mut SftConfig)| {
        let mut c = base.clone();
        f(&mut c);
        claim(&d, &RunRecord::new("grpo", &c).unwrap(), Claim::Resume).err().map(|e| e.to_string())
    };
    for (what, f) in [
        ("grpo.group: 16 -> 8", &(|c: &mut SftConfig| c.grpo.group = 8) as &dyn Fn(&mut SftConfig)),
        ("grpo.prompts_per_step: 8 -> 4", &|c: &mut SftConfig| c.grpo.prompts_per_step = 4),
        ("grpo.beta", &|c: &mut SftConfig| c.grpo.beta = 0.5),
        ("grpo.temperature", &|c: &mut SftConfig| c.grpo.temperature = 0.7),
        ("synth.scene", &|c: &mut SftConfig| c.synth.scene = actial::data::render::SceneStyle::Parts),
    ] {
        let e = changed(f).unwrap_or_else(|| panic!("{what}: accepted"));
        assert!(e.contains("this resume would change the run") && e.contains(what), "{what}: {e}");
    }
    for f in [
        &(|c: &mut SftConfig| c.run.steps += 100) as &dyn Fn(&mut SftConfig),
        &|c: &mut SftConfig| c.grpo.steps += 5,
        &|c: &mut SftConfig| c.run.device = "cuda".into(),
        &|c: &mut SftConfig| c.run.save_every = 7,
    ] {
        assert_eq!(changed(f), None);
    }
    // The same run keeps its id across resumes.
    let id = |d: &std::path::Path| -> String {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("run.json")).unwrap()).unwrap();
        v["run_id"].as_str().unwrap().to_string()
    };
    let first = id(&d);
    claim(&d, &RunRecord::new("grpo", &base).unwrap(), Claim::Resume).unwrap();
    assert_eq!(id(&d), first);
    std::fs::remove_dir_all(&d).unwrap();
}
