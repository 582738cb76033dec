//! The front end a user drives: [`controller`] (explore, `e`, network pipes, the task farm),
//! [`exec_loop`] (one command over the selected hosts), [`farm`], [`pipe`], [`selection`],
//! [`output`] (lines attributed by host index).

pub mod controller;
pub mod exec_loop;
pub mod farm;
pub mod output;
pub mod pipe;
pub mod selection;
