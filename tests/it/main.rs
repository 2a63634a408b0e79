mod ssh;
mod sshd;
