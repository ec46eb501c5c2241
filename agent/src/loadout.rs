//! What the agent knows on one request: the system prompt, skills and plugins, read afresh
//! from the config dir each time so files the host writes take effect without a restart.

use std::path::Path;

use crate::plugins::{self, Plugin};
use crate::skills::{self, Skill};

/// The optional base system prompt in the config dir.
pub const SYSTEM_PROMPT_FILE: &str = "system-prompt.md";

/// A snapshot of the config dir's prompt material.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loadout {
    base_prompt: String,
    /// The workspace's own skills, then plugin skills whose id was not taken yet.
    pub skills: Vec<Skill>,
    pub plugins: Vec<Plugin>,
}

impl Loadout {
    /// Reads the config dir. Blocking: call it from `spawn_blocking` on a request path.
    pub fn load(config_dir: &Path) -> Self {
        let base_prompt = std::fs::read_to_string(config_dir.join(SYSTEM_PROMPT_FILE))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let mut skills = skills::load_dir(&config_dir.join("skills"));
        let plugins = plugins::load_dir(&config_dir.join("plugins"));
        for skill in plugins.iter().flat_map(|p| &p.skills) {
            if !skills.iter().any(|s| s.id == skill.id) {
                skills.push(skill.clone());
            }
        }
        Self {
            base_prompt,
            skills,
            plugins,
        }
    }

    pub fn skill_ids(&self) -> Vec<String> {
        self.skills.iter().map(|s| s.id.clone()).collect()
    }

    pub fn plugin_names(&self) -> Vec<String> {
        self.plugins.iter().map(|p| p.name.clone()).collect()
    }

    /// `system-prompt.md`, then a list of the skills, then every plugin's rules.
    pub fn system_prompt(&self) -> String {
        let mut sections = Vec::new();
        if !self.base_prompt.is_empty() {
            sections.push(self.base_prompt.clone());
        }
        if !self.skills.is_empty() {
            let mut list = String::from("## Skills");
            for skill in &self.skills {
                list.push_str(&format!("\n- {} ({})", skill.name, skill.id));
                if !skill.description.is_empty() {
                    list.push_str(&format!(": {}", skill.description));
                }
            }
            sections.push(list);
        }
        for plugin in self.plugins.iter().filter(|p| !p.rules.is_empty()) {
            sections.push(format!(
                "## Rules from plugin {}\n\n{}",
                plugin.name,
                plugin.rules.join("\n\n")
            ));
        }
        sections.join("\n\n")
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    #[test]
    fn plugin_skills_come_after_workspace_skills_and_are_deduplicated_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(&root.join("system-prompt.md"), "You are the dev lead.\n");
        write(
            &root.join("skills/review/SKILL.md"),
            "---\nname: Own review\ndescription: mine\n---\n",
        );
        write(&root.join("plugins/kit/.complete"), "");
        write(
            &root.join("plugins/kit/skills/review/SKILL.md"),
            "---\nname: Plugin review\n---\n",
        );
        write(
            &root.join("plugins/kit/skills/deploy/SKILL.md"),
            "---\nname: Deploy\n---\n",
        );
        write(
            &root.join("plugins/kit/rules/style.md"),
            "Always write tests.",
        );

        let loadout = Loadout::load(root);

        assert_eq!(loadout.skill_ids(), ["review", "deploy"]);
        assert_eq!(loadout.skills[0].name, "Own review");
        assert_eq!(loadout.plugin_names(), ["kit"]);
        let prompt = loadout.system_prompt();
        assert!(prompt.starts_with("You are the dev lead."), "{prompt}");
        assert!(prompt.contains("- Own review (review): mine"), "{prompt}");
        assert!(prompt.contains("- Deploy (deploy)"), "{prompt}");
        assert!(prompt.ends_with("Always write tests."), "{prompt}");
    }

    #[test]
    fn an_empty_config_dir_has_an_empty_loadout() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Loadout::load(dir.path()), Loadout::default());
    }
}
