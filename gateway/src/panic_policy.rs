//! What a panic does to the server. A panic on one of ringchat's own threads (a shard, the
//! sequencer, the store's helpers: `threads::dies_with_process`) aborts the process: nothing
//! catches it there, and a process that went on without the thread would keep a dead shard's
//! sessions registered (online, in rooms and group audiences, served by nobody) or take no more
//! writes. Aborting hands the server to its supervisor (systemd's `Restart=`), which starts it
//! again from the store. A panic in a runtime's task stays that task's failure.

use std::io::Write as _;

use ringchat_backend::threads::dies_with_process;

/// Installs the policy over the default hook (which still prints the panic first).
pub fn install() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        let thread = std::thread::current();
        if let Some(name) = thread.name()
            && dies_with_process(name)
        {
            let _ = writeln!(
                std::io::stderr(),
                "ringchat: thread {name} panicked; aborting so that the supervisor restarts the \
                 server from its store"
            );
            std::process::abort();
        }
    }));
}
