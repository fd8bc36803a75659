//! Plugin versions and their attachments to topics.

use super::limits::{
    ATTACHMENTS_MAX, ATTACHMENTS_PER_TOPIC_MAX, ON_ERROR_BYTES_MAX, PLUGIN_KIND_BYTES_MAX,
    PLUGIN_MODULE_BYTES_MAX, PLUGIN_NAME_BYTES_MAX, PLUGIN_PARAM_BYTES_MAX, PLUGIN_PARAMS_MAX,
    PLUGIN_VERSION_BYTES_MAX, PLUGINS_MAX, TOPIC_NAME_BYTES_MAX,
};
use super::{CommandError, MetadataResponse, MetadataState, PluginAttachment, PluginRecord};

/// The stages a plugin can be attached at.
const STAGES: [&str; 2] = ["produce", "fetch"];

impl MetadataState {
    pub(super) fn upload_plugin(
        &mut self,
        name: &str,
        version: &str,
        kind: &str,
        size_bytes: u64,
        uploaded_ms: u64,
    ) -> Result<MetadataResponse, CommandError> {
        validate_plugin_name(name)?;
        if version.is_empty()
            || version.len() > PLUGIN_VERSION_BYTES_MAX
            || !version.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(CommandError::InvalidPlugin(format!(
                "a version is 1 to {PLUGIN_VERSION_BYTES_MAX} ASCII letters and digits"
            )));
        }
        if kind.is_empty()
            || kind.len() > PLUGIN_KIND_BYTES_MAX
            || !kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(CommandError::InvalidPlugin(format!(
                "a kind is 1 to {PLUGIN_KIND_BYTES_MAX} ASCII letters, digits and '_'"
            )));
        }
        if size_bytes > PLUGIN_MODULE_BYTES_MAX {
            return Err(CommandError::InvalidPlugin(format!(
                "{size_bytes} bytes, more than {PLUGIN_MODULE_BYTES_MAX}"
            )));
        }
        if !self.plugins.contains_key(name) && self.plugins.len() >= PLUGINS_MAX {
            return Err(CommandError::TooManyPlugins { max: PLUGINS_MAX });
        }
        let previous = self.plugins.insert(
            name.to_owned(),
            PluginRecord {
                version: version.to_owned(),
                kind: kind.to_owned(),
                size_bytes,
                uploaded_ms,
            },
        );
        Ok(MetadataResponse::PluginUploaded {
            previous_version: previous.map(|p| p.version),
        })
    }

    pub(super) fn attach_plugin(
        &mut self,
        topic: &str,
        plugin: &str,
        stage: &str,
        params: &[(String, String)],
        on_error: &str,
    ) -> Result<MetadataResponse, CommandError> {
        if !self.topics.contains_key(topic) {
            return Err(CommandError::UnknownTopic(topic.to_owned()));
        }
        if !self.plugins.contains_key(plugin) {
            return Err(CommandError::UnknownPlugin(plugin.to_owned()));
        }
        if !STAGES.contains(&stage) {
            return Err(CommandError::InvalidAttachment(
                "the stage is produce or fetch".to_owned(),
            ));
        }
        validate_params(params)?;
        validate_on_error(topic, on_error)?;
        // Checked here, in log order, so two attachments proposed at once on different
        // brokers cannot close a cycle that neither saw.
        if stage == "produce"
            && let Some(target) = on_error.strip_prefix("dead-letter:")
            && self.dead_letter_leads_back(topic, target)
        {
            return Err(CommandError::DeadLetterCycle {
                topic: topic.to_owned(),
                target: target.to_owned(),
            });
        }
        let attachment = PluginAttachment {
            topic: topic.to_owned(),
            plugin: plugin.to_owned(),
            stage: stage.to_owned(),
            params: params.to_vec(),
            on_error: on_error.to_owned(),
        };
        // The same attachment again is a retried proposal, not a second chain link.
        if self.attachments.contains(&attachment) {
            return Ok(MetadataResponse::PluginAttached);
        }
        let attached = self.attachments.iter().filter(|a| a.topic == topic).count();
        if attached >= ATTACHMENTS_PER_TOPIC_MAX || self.attachments.len() >= ATTACHMENTS_MAX {
            return Err(CommandError::TooManyAttachments {
                topic: topic.to_owned(),
                max: ATTACHMENTS_PER_TOPIC_MAX,
            });
        }
        self.attachments.push(attachment);
        Ok(MetadataResponse::PluginAttached)
    }

    /// Whether records dead-lettered from `topic` into `target` at the produce stage
    /// could come back to `topic` through the produce-stage dead-letter attachments.
    /// Such a dead letter is written while the source partition is locked, so a cycle
    /// could leave two failing batches each holding one partition and waiting for the
    /// other's.
    pub fn dead_letter_leads_back(&self, topic: &str, target: &str) -> bool {
        let edges: Vec<(&str, &str)> = self
            .attachments
            .iter()
            .filter(|a| a.stage == "produce")
            .filter_map(|a| {
                a.on_error
                    .strip_prefix("dead-letter:")
                    .map(|to| (a.topic.as_str(), to))
            })
            .collect();
        let mut seen = std::collections::BTreeSet::new();
        let mut frontier = vec![target];
        while let Some(next) = frontier.pop() {
            if next == topic {
                return true;
            }
            if seen.insert(next) {
                frontier.extend(
                    edges
                        .iter()
                        .filter(|(from, _)| *from == next)
                        .map(|(_, to)| *to),
                );
            }
        }
        false
    }

    pub(super) fn detach_plugin(
        &mut self,
        topic: &str,
        plugin: &str,
    ) -> Result<MetadataResponse, CommandError> {
        let before = self.attachments.len();
        self.attachments
            .retain(|a| !(a.topic == topic && a.plugin == plugin));
        let removed = before - self.attachments.len();
        if removed == 0 {
            return Err(CommandError::NotAttached {
                topic: topic.to_owned(),
                plugin: plugin.to_owned(),
            });
        }
        Ok(MetadataResponse::PluginDetached {
            removed: u32::try_from(removed).expect("attachments are bounded by ATTACHMENTS_MAX"),
        })
    }
}

impl MetadataState {
    /// Forgets plugin `name`, refused while any topic has it attached (its batches
    /// would fail) so that a delete never changes what a topic's consumers receive.
    pub(super) fn delete_plugin(&mut self, name: &str) -> Result<MetadataResponse, CommandError> {
        if !self.plugins.contains_key(name) {
            return Err(CommandError::UnknownPlugin(name.to_owned()));
        }
        let mut topics: Vec<&str> = self
            .attachments
            .iter()
            .filter(|a| a.plugin == name)
            .map(|a| a.topic.as_str())
            .collect();
        topics.dedup();
        if !topics.is_empty() {
            return Err(CommandError::PluginAttached {
                plugin: name.to_owned(),
                topics: topics
                    .iter()
                    .map(|t| format!("`{t}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        self.plugins.remove(name);
        Ok(MetadataResponse::PluginDeleted)
    }
}

/// 1 to 128 of `[A-Za-z0-9._-]`, as `quiver-wire` checks them.
fn validate_plugin_name(name: &str) -> Result<(), CommandError> {
    if name.is_empty()
        || name.len() > PLUGIN_NAME_BYTES_MAX
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(CommandError::InvalidPlugin(format!(
            "a name is 1 to {PLUGIN_NAME_BYTES_MAX} ASCII letters, digits, '.', '_' and '-'"
        )));
    }
    Ok(())
}

fn validate_params(params: &[(String, String)]) -> Result<(), CommandError> {
    if params.len() > PLUGIN_PARAMS_MAX {
        return Err(CommandError::InvalidAttachment(format!(
            "{} parameters, more than {PLUGIN_PARAMS_MAX}",
            params.len()
        )));
    }
    for (key, value) in params {
        if key.is_empty()
            || key.len() > PLUGIN_PARAM_BYTES_MAX
            || value.len() > PLUGIN_PARAM_BYTES_MAX
        {
            return Err(CommandError::InvalidAttachment(format!(
                "parameter keys are 1 to {PLUGIN_PARAM_BYTES_MAX} bytes, values at most that"
            )));
        }
    }
    Ok(())
}

/// `fail`, `skip`, `pass` or `dead-letter:TOPIC` where TOPIC is not the topic itself.
fn validate_on_error(topic: &str, on_error: &str) -> Result<(), CommandError> {
    if on_error.len() > ON_ERROR_BYTES_MAX {
        return Err(CommandError::InvalidAttachment(
            "on_error is too long".to_owned(),
        ));
    }
    match on_error {
        "fail" | "skip" | "pass" => Ok(()),
        other => match other.strip_prefix("dead-letter:") {
            Some(target) if target == topic => Err(CommandError::InvalidAttachment(
                "the dead-letter topic cannot be the topic itself".to_owned(),
            )),
            Some(target)
                if !target.is_empty()
                    && target.len() <= TOPIC_NAME_BYTES_MAX
                    && super::topic::is_topic_name_chars(target) =>
            {
                Ok(())
            }
            _ => Err(CommandError::InvalidAttachment(
                "on_error is fail, skip, pass or dead-letter:TOPIC".to_owned(),
            )),
        },
    }
}
