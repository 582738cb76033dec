//! The command language: [`shell`] (the prompt's commands), [`rules`] (login rules), [`hostrange`]
//! (host name ranges), [`hosts`] (the host table), [`help`].

pub mod help;
pub mod hostrange;
pub mod hosts;
pub mod rules;
pub mod shell;
