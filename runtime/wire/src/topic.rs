//! Topic names: what the broker accepts and the SDK checks before sending.

/// The longest topic name, as in Kafka: the name becomes part of directory names.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// Names with this prefix belong to the broker (committed offsets and the like).
pub const INTERNAL_TOPIC_PREFIX: &str = "__";

/// Why a topic name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicNameError {
    #[error("topic name is empty")]
    Empty,
    #[error("topic name is {0} bytes, longer than {TOPIC_NAME_BYTES_MAX}")]
    TooLong(usize),
    #[error("topic name `{0}` is reserved")]
    Reserved(String),
    #[error("topic name contains `{0}`: use only ASCII letters, digits, '.', '_' and '-'")]
    BadCharacter(char),
}

/// Checks a user-chosen topic name: 1 to 249 of `[A-Za-z0-9._-]`, not `.` or `..`, and
/// not starting with the internal prefix.
pub fn validate_topic_name(name: &str) -> Result<(), TopicNameError> {
    if name.is_empty() {
        return Err(TopicNameError::Empty);
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(TopicNameError::TooLong(name.len()));
    }
    if name == "." || name == ".." || name.starts_with(INTERNAL_TOPIC_PREFIX) {
        return Err(TopicNameError::Reserved(name.to_owned()));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(TopicNameError::BadCharacter(bad));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(validate_topic_name("orders.v1-eu_2"), Ok(()));
        assert_eq!(validate_topic_name(""), Err(TopicNameError::Empty));
        assert_eq!(
            validate_topic_name(".."),
            Err(TopicNameError::Reserved("..".into()))
        );
        assert_eq!(
            validate_topic_name("__offsets"),
            Err(TopicNameError::Reserved("__offsets".into()))
        );
        assert_eq!(
            validate_topic_name("a/b"),
            Err(TopicNameError::BadCharacter('/'))
        );
        assert_eq!(
            validate_topic_name(&"x".repeat(250)),
            Err(TopicNameError::TooLong(250))
        );
    }
}
