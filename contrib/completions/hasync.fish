# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_hasync_global_optspecs
    string join \n c/config= v/verbose q/quiet peer-address= h/help V/version
end

function __fish_hasync_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_hasync_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_hasync_using_subcommand
    set -l cmd (__fish_hasync_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c hasync -n "__fish_hasync_needs_command" -s c -l config -d 'Config file [default: /etc/hasync/hasync.toml]' -r -F
complete -c hasync -n "__fish_hasync_needs_command" -l peer-address -d 'Use this address for the peer and the master check (what the IP argument of Wazo\'s scripts does; see `compat`)' -r
complete -c hasync -n "__fish_hasync_needs_command" -s v -l verbose -d 'More output (repeat for debug logs)'
complete -c hasync -n "__fish_hasync_needs_command" -s q -l quiet -d 'Only errors'
complete -c hasync -n "__fish_hasync_needs_command" -s h -l help -d 'Print help'
complete -c hasync -n "__fish_hasync_needs_command" -s V -l version -d 'Print version'
complete -c hasync -n "__fish_hasync_needs_command" -f -a "push" -d 'Mirror a local directory to a destination, like `rsync -a SRC/ DEST/`'
complete -c hasync -n "__fish_hasync_needs_command" -f -a "pull" -d 'Mirror a (remote) source into a local directory'
complete -c hasync -n "__fish_hasync_needs_command" -f -a "sync" -d 'Run the config\'s [[sync]] jobs now (all, or the named ones)'
complete -c hasync -n "__fish_hasync_needs_command" -f -a "db-replicate" -d 'Run the config\'s [db] job now: dump on the master, ship, replay on the slave'
complete -c hasync -n "__fish_hasync_needs_command" -f -a "init" -d 'Create this node\'s SSH key, install it on the peer (restricted), pin its host key'
complete -c hasync -n "__fish_hasync_needs_command" -f -a "services" -d 'Start, stop or show the slave services ([services]); idempotent'
complete -c hasync -n "__fish_hasync_needs_command" -f -a "check-master" -d 'Probe the master; start the slave services when it is gone, stop them when back'
complete -c hasync -n "__fish_hasync_needs_command" -f -a "promote" -d 'Make this node the master: services up, sentinel is-primary, role file'
complete -c hasync -n "__fish_hasync_needs_command" -f -a "demote" -d 'Make this node the slave: services down, sentinel is-secondary, role file'
complete -c hasync -n "__fish_hasync_needs_command" -f -a "daemon" -d 'Run every job on its schedule (cron, watch), with retries, status and metrics'
complete -c hasync -n "__fish_hasync_needs_command" -f -a "switchover" -d 'Move the leadership of a [cluster] (etcd) to another member, planned'
complete -c hasync -n "__fish_hasync_needs_command" -f -a "status" -d 'Show the role, the peer, and each job\'s last run, lag and next run'
complete -c hasync -n "__fish_hasync_needs_command" -f -a "cron" -d 'Print /etc/cron.d lines equivalent to the config\'s schedules'
complete -c hasync -n "__fish_hasync_needs_command" -f -a "serve" -d 'The peer side of a connection, started over SSH or as a local child; not for people'
complete -c hasync -n "__fish_hasync_needs_command" -f -a "generate" -d 'Write the man page or shell completions (for packaging)'
complete -c hasync -n "__fish_hasync_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c hasync -n "__fish_hasync_using_subcommand push" -l exclude -d 'Exclude paths matching PATTERN (gitignore syntax; repeatable)' -r
complete -c hasync -n "__fish_hasync_using_subcommand push" -l max-delete -d 'Refuse the run if it would delete more than N entries (exit 4)' -r
complete -c hasync -n "__fish_hasync_using_subcommand push" -l compress -d 'Compress with zstd (default over SSH; LEVEL 1-19, default 3); data that does not compress is sent as it is' -r
complete -c hasync -n "__fish_hasync_using_subcommand push" -l bwlimit -d 'Cap the bytes on the link at RATE per second, each direction (rsync\'s units: a bare number is KiB/s, suffixes K, M, G; 0 for none)' -r
complete -c hasync -n "__fish_hasync_using_subcommand push" -l identity -d 'SSH private key' -r -F
complete -c hasync -n "__fish_hasync_using_subcommand push" -l known-hosts -d 'known_hosts file for the peer\'s host key [default: ~/.ssh/known_hosts]' -r -F
complete -c hasync -n "__fish_hasync_using_subcommand push" -l remote-path -d 'Where hasync lives on the peer' -r
complete -c hasync -n "__fish_hasync_using_subcommand push" -l timeout -d 'Connect deadline; a peer or link silent this long ends the run (exit 3)' -r
complete -c hasync -n "__fish_hasync_using_subcommand push" -s c -l config -d 'Config file [default: /etc/hasync/hasync.toml]' -r -F
complete -c hasync -n "__fish_hasync_using_subcommand push" -l peer-address -d 'Use this address for the peer and the master check (what the IP argument of Wazo\'s scripts does; see `compat`)' -r
complete -c hasync -n "__fish_hasync_using_subcommand push" -l delete -d 'Delete what the source no longer has (after transfers)'
complete -c hasync -n "__fish_hasync_using_subcommand push" -l checksum -d 'Compare by BLAKE3 content hash instead of size + mtime'
complete -c hasync -n "__fish_hasync_using_subcommand push" -s n -l dry-run -d 'Print what would change, change nothing'
complete -c hasync -n "__fish_hasync_using_subcommand push" -l json -d 'Print one JSON object with the run\'s stats on stdout at the end'
complete -c hasync -n "__fish_hasync_using_subcommand push" -l allow-empty-source -d 'Allow an empty source to empty the mirror with --delete'
complete -c hasync -n "__fish_hasync_using_subcommand push" -s x -l one-file-system -d 'Don\'t cross file system boundaries (like rsync -x): a mount point is mirrored as a directory, what is mounted there is neither sent nor deleted'
complete -c hasync -n "__fish_hasync_using_subcommand push" -l numeric-ids -d 'Mirror owners by number, not by user and group name (as root; like rsync\'s --numeric-ids)'
complete -c hasync -n "__fish_hasync_using_subcommand push" -l no-fsync -d 'Don\'t flush files to disk before they replace old copies (faster, less safe on power loss)'
complete -c hasync -n "__fish_hasync_using_subcommand push" -l no-compress -d 'Do not compress (the default to a local peer)'
complete -c hasync -n "__fish_hasync_using_subcommand push" -l accept-new -d 'Trust and record the peer\'s host key if it is not known yet (never a changed one)'
complete -c hasync -n "__fish_hasync_using_subcommand push" -s v -l verbose -d 'More output (repeat for debug logs)'
complete -c hasync -n "__fish_hasync_using_subcommand push" -s q -l quiet -d 'Only errors'
complete -c hasync -n "__fish_hasync_using_subcommand push" -s h -l help -d 'Print help'
complete -c hasync -n "__fish_hasync_using_subcommand pull" -l exclude -d 'Exclude paths matching PATTERN (gitignore syntax; repeatable)' -r
complete -c hasync -n "__fish_hasync_using_subcommand pull" -l max-delete -d 'Refuse the run if it would delete more than N entries (exit 4)' -r
complete -c hasync -n "__fish_hasync_using_subcommand pull" -l compress -d 'Compress with zstd (default over SSH; LEVEL 1-19, default 3); data that does not compress is sent as it is' -r
complete -c hasync -n "__fish_hasync_using_subcommand pull" -l bwlimit -d 'Cap the bytes on the link at RATE per second, each direction (rsync\'s units: a bare number is KiB/s, suffixes K, M, G; 0 for none)' -r
complete -c hasync -n "__fish_hasync_using_subcommand pull" -l identity -d 'SSH private key' -r -F
complete -c hasync -n "__fish_hasync_using_subcommand pull" -l known-hosts -d 'known_hosts file for the peer\'s host key [default: ~/.ssh/known_hosts]' -r -F
complete -c hasync -n "__fish_hasync_using_subcommand pull" -l remote-path -d 'Where hasync lives on the peer' -r
complete -c hasync -n "__fish_hasync_using_subcommand pull" -l timeout -d 'Connect deadline; a peer or link silent this long ends the run (exit 3)' -r
complete -c hasync -n "__fish_hasync_using_subcommand pull" -s c -l config -d 'Config file [default: /etc/hasync/hasync.toml]' -r -F
complete -c hasync -n "__fish_hasync_using_subcommand pull" -l peer-address -d 'Use this address for the peer and the master check (what the IP argument of Wazo\'s scripts does; see `compat`)' -r
complete -c hasync -n "__fish_hasync_using_subcommand pull" -l delete -d 'Delete what the source no longer has (after transfers)'
complete -c hasync -n "__fish_hasync_using_subcommand pull" -l checksum -d 'Compare by BLAKE3 content hash instead of size + mtime'
complete -c hasync -n "__fish_hasync_using_subcommand pull" -s n -l dry-run -d 'Print what would change, change nothing'
complete -c hasync -n "__fish_hasync_using_subcommand pull" -l json -d 'Print one JSON object with the run\'s stats on stdout at the end'
complete -c hasync -n "__fish_hasync_using_subcommand pull" -l allow-empty-source -d 'Allow an empty source to empty the mirror with --delete'
complete -c hasync -n "__fish_hasync_using_subcommand pull" -s x -l one-file-system -d 'Don\'t cross file system boundaries (like rsync -x): a mount point is mirrored as a directory, what is mounted there is neither sent nor deleted'
complete -c hasync -n "__fish_hasync_using_subcommand pull" -l numeric-ids -d 'Mirror owners by number, not by user and group name (as root; like rsync\'s --numeric-ids)'
complete -c hasync -n "__fish_hasync_using_subcommand pull" -l no-fsync -d 'Don\'t flush files to disk before they replace old copies (faster, less safe on power loss)'
complete -c hasync -n "__fish_hasync_using_subcommand pull" -l no-compress -d 'Do not compress (the default to a local peer)'
complete -c hasync -n "__fish_hasync_using_subcommand pull" -l accept-new -d 'Trust and record the peer\'s host key if it is not known yet (never a changed one)'
complete -c hasync -n "__fish_hasync_using_subcommand pull" -s v -l verbose -d 'More output (repeat for debug logs)'
complete -c hasync -n "__fish_hasync_using_subcommand pull" -s q -l quiet -d 'Only errors'
complete -c hasync -n "__fish_hasync_using_subcommand pull" -s h -l help -d 'Print help'
complete -c hasync -n "__fish_hasync_using_subcommand sync" -l peer -d 'With [[peer]] tables: sync to (or from) this peer only (repeat it for several; default: every peer, in parallel, each over its own connection)' -r
complete -c hasync -n "__fish_hasync_using_subcommand sync" -l compress -d 'Compress with zstd (default over SSH; LEVEL 1-19, default 3); data that does not compress is sent as it is' -r
complete -c hasync -n "__fish_hasync_using_subcommand sync" -l bwlimit -d 'Cap the bytes on the link at RATE per second, each direction (rsync\'s units: a bare number is KiB/s, suffixes K, M, G; 0 for none)' -r
complete -c hasync -n "__fish_hasync_using_subcommand sync" -s c -l config -d 'Config file [default: /etc/hasync/hasync.toml]' -r -F
complete -c hasync -n "__fish_hasync_using_subcommand sync" -l peer-address -d 'Use this address for the peer and the master check (what the IP argument of Wazo\'s scripts does; see `compat`)' -r
complete -c hasync -n "__fish_hasync_using_subcommand sync" -s n -l dry-run -d 'Print what would change, change nothing'
complete -c hasync -n "__fish_hasync_using_subcommand sync" -l json -d 'Print one JSON object with each job\'s stats on stdout at the end'
complete -c hasync -n "__fish_hasync_using_subcommand sync" -l wait -d 'When a job is already running (the daemon, another `hasync sync`), wait for it to end and then run, instead of reporting it with exit code 5'
complete -c hasync -n "__fish_hasync_using_subcommand sync" -l no-compress -d 'Do not compress (the default to a local peer)'
complete -c hasync -n "__fish_hasync_using_subcommand sync" -s v -l verbose -d 'More output (repeat for debug logs)'
complete -c hasync -n "__fish_hasync_using_subcommand sync" -s q -l quiet -d 'Only errors'
complete -c hasync -n "__fish_hasync_using_subcommand sync" -s h -l help -d 'Print help'
complete -c hasync -n "__fish_hasync_using_subcommand db-replicate" -l peer -d 'With [[peer]] tables: replicate to this peer only (repeat it for several; default: every peer, one after the other)' -r
complete -c hasync -n "__fish_hasync_using_subcommand db-replicate" -s c -l config -d 'Config file [default: /etc/hasync/hasync.toml]' -r -F
complete -c hasync -n "__fish_hasync_using_subcommand db-replicate" -l peer-address -d 'Use this address for the peer and the master check (what the IP argument of Wazo\'s scripts does; see `compat`)' -r
complete -c hasync -n "__fish_hasync_using_subcommand db-replicate" -s n -l dry-run -d 'Show what would be replicated (tables, sizes, row estimates), change nothing'
complete -c hasync -n "__fish_hasync_using_subcommand db-replicate" -l json -d 'Print one JSON object with the run\'s stats on stdout at the end'
complete -c hasync -n "__fish_hasync_using_subcommand db-replicate" -l force -d 'Ship and replay even when the dump equals the last one replayed'
complete -c hasync -n "__fish_hasync_using_subcommand db-replicate" -l discard-failover-writes -d 'Replay even into a slave whose database was written while it served as master after a failover: those rows are discarded (the slave refuses otherwise; see docs/master-check.md, failback)'
complete -c hasync -n "__fish_hasync_using_subcommand db-replicate" -s v -l verbose -d 'More output (repeat for debug logs)'
complete -c hasync -n "__fish_hasync_using_subcommand db-replicate" -s q -l quiet -d 'Only errors'
complete -c hasync -n "__fish_hasync_using_subcommand db-replicate" -s h -l help -d 'Print help'
complete -c hasync -n "__fish_hasync_using_subcommand init" -l peer -d 'The peer, `[user@]host[:port]`, or the name of one of the config\'s [[peer]] tables [default: the config\'s [node] peer]' -r
complete -c hasync -n "__fish_hasync_using_subcommand init" -l identity -d 'This node\'s hasync private key [default: [node] identity, or ~/.ssh/hasync_ed25519]' -r -F
complete -c hasync -n "__fish_hasync_using_subcommand init" -l known-hosts -d 'Where the peer\'s host key is pinned [default: [node] known_hosts, or ~/.ssh/known_hosts]' -r -F
complete -c hasync -n "__fish_hasync_using_subcommand init" -l remote-path -d 'Where hasync lives on the peer (goes into the forced command) [default: [node] remote_path]' -r
complete -c hasync -n "__fish_hasync_using_subcommand init" -l password-file -d 'Read the peer account\'s password from FILE (first line)' -r -F
complete -c hasync -n "__fish_hasync_using_subcommand init" -l allow -d 'Also allow this directory on the peer (repeatable; added to the [[sync]] paths)' -r -F
complete -c hasync -n "__fish_hasync_using_subcommand init" -s c -l config -d 'Config file [default: /etc/hasync/hasync.toml]' -r -F
complete -c hasync -n "__fish_hasync_using_subcommand init" -l peer-address -d 'Use this address for the peer and the master check (what the IP argument of Wazo\'s scripts does; see `compat`)' -r
complete -c hasync -n "__fish_hasync_using_subcommand init" -l force -d 'Rotate the key and replace the peer\'s hasync line'
complete -c hasync -n "__fish_hasync_using_subcommand init" -s v -l verbose -d 'More output (repeat for debug logs)'
complete -c hasync -n "__fish_hasync_using_subcommand init" -s q -l quiet -d 'Only errors'
complete -c hasync -n "__fish_hasync_using_subcommand init" -s h -l help -d 'Print help'
complete -c hasync -n "__fish_hasync_using_subcommand services" -s c -l config -d 'Config file [default: /etc/hasync/hasync.toml]' -r -F
complete -c hasync -n "__fish_hasync_using_subcommand services" -l peer-address -d 'Use this address for the peer and the master check (what the IP argument of Wazo\'s scripts does; see `compat`)' -r
complete -c hasync -n "__fish_hasync_using_subcommand services" -l json -d 'Print the report as one JSON object on stdout'
complete -c hasync -n "__fish_hasync_using_subcommand services" -s v -l verbose -d 'More output (repeat for debug logs)'
complete -c hasync -n "__fish_hasync_using_subcommand services" -s q -l quiet -d 'Only errors'
complete -c hasync -n "__fish_hasync_using_subcommand services" -s h -l help -d 'Print help'
complete -c hasync -n "__fish_hasync_using_subcommand check-master" -s c -l config -d 'Config file [default: /etc/hasync/hasync.toml]' -r -F
complete -c hasync -n "__fish_hasync_using_subcommand check-master" -l peer-address -d 'Use this address for the peer and the master check (what the IP argument of Wazo\'s scripts does; see `compat`)' -r
complete -c hasync -n "__fish_hasync_using_subcommand check-master" -l once -d 'Check once and exit (for cron); the counters persist in state_dir/master.json'
complete -c hasync -n "__fish_hasync_using_subcommand check-master" -l json -d 'With --once: print the check and the state file as one JSON object on stdout'
complete -c hasync -n "__fish_hasync_using_subcommand check-master" -s v -l verbose -d 'More output (repeat for debug logs)'
complete -c hasync -n "__fish_hasync_using_subcommand check-master" -s q -l quiet -d 'Only errors'
complete -c hasync -n "__fish_hasync_using_subcommand check-master" -s h -l help -d 'Print help'
complete -c hasync -n "__fish_hasync_using_subcommand promote" -s c -l config -d 'Config file [default: /etc/hasync/hasync.toml]' -r -F
complete -c hasync -n "__fish_hasync_using_subcommand promote" -l peer-address -d 'Use this address for the peer and the master check (what the IP argument of Wazo\'s scripts does; see `compat`)' -r
complete -c hasync -n "__fish_hasync_using_subcommand promote" -l copy-back -d 'Copy the [check_master] copy_back paths (demote: push to the peer; promote: pull from the peer) before switching'
complete -c hasync -n "__fish_hasync_using_subcommand promote" -l json -d 'Print what was done as one JSON object on stdout'
complete -c hasync -n "__fish_hasync_using_subcommand promote" -s v -l verbose -d 'More output (repeat for debug logs)'
complete -c hasync -n "__fish_hasync_using_subcommand promote" -s q -l quiet -d 'Only errors'
complete -c hasync -n "__fish_hasync_using_subcommand promote" -s h -l help -d 'Print help'
complete -c hasync -n "__fish_hasync_using_subcommand demote" -s c -l config -d 'Config file [default: /etc/hasync/hasync.toml]' -r -F
complete -c hasync -n "__fish_hasync_using_subcommand demote" -l peer-address -d 'Use this address for the peer and the master check (what the IP argument of Wazo\'s scripts does; see `compat`)' -r
complete -c hasync -n "__fish_hasync_using_subcommand demote" -l copy-back -d 'Copy the [check_master] copy_back paths (demote: push to the peer; promote: pull from the peer) before switching'
complete -c hasync -n "__fish_hasync_using_subcommand demote" -l json -d 'Print what was done as one JSON object on stdout'
complete -c hasync -n "__fish_hasync_using_subcommand demote" -s v -l verbose -d 'More output (repeat for debug logs)'
complete -c hasync -n "__fish_hasync_using_subcommand demote" -s q -l quiet -d 'Only errors'
complete -c hasync -n "__fish_hasync_using_subcommand demote" -s h -l help -d 'Print help'
complete -c hasync -n "__fish_hasync_using_subcommand daemon" -s c -l config -d 'Config file [default: /etc/hasync/hasync.toml]' -r -F
complete -c hasync -n "__fish_hasync_using_subcommand daemon" -l peer-address -d 'Use this address for the peer and the master check (what the IP argument of Wazo\'s scripts does; see `compat`)' -r
complete -c hasync -n "__fish_hasync_using_subcommand daemon" -s v -l verbose -d 'More output (repeat for debug logs)'
complete -c hasync -n "__fish_hasync_using_subcommand daemon" -s q -l quiet -d 'Only errors'
complete -c hasync -n "__fish_hasync_using_subcommand daemon" -s h -l help -d 'Print help'
complete -c hasync -n "__fish_hasync_using_subcommand switchover" -l to -d 'The member (its [cluster] name) that should become leader' -r
complete -c hasync -n "__fish_hasync_using_subcommand switchover" -l wait -d 'How long to wait for the target to take over [default: 2 x (ttl + loop_wait)]' -r
complete -c hasync -n "__fish_hasync_using_subcommand switchover" -s c -l config -d 'Config file [default: /etc/hasync/hasync.toml]' -r -F
complete -c hasync -n "__fish_hasync_using_subcommand switchover" -l peer-address -d 'Use this address for the peer and the master check (what the IP argument of Wazo\'s scripts does; see `compat`)' -r
complete -c hasync -n "__fish_hasync_using_subcommand switchover" -l json -d 'Print the result as one JSON object on stdout'
complete -c hasync -n "__fish_hasync_using_subcommand switchover" -s v -l verbose -d 'More output (repeat for debug logs)'
complete -c hasync -n "__fish_hasync_using_subcommand switchover" -s q -l quiet -d 'Only errors'
complete -c hasync -n "__fish_hasync_using_subcommand switchover" -s h -l help -d 'Print help'
complete -c hasync -n "__fish_hasync_using_subcommand status" -l check -d 'Answer one question by the exit code, like the daemon\'s /primary and /replica (keepalived\'s track_script): 0 yes, 1 no, with the reason on stdout. primary: this node serves (a master whose slave has not taken over, or a slave whose services hasync started). replica: a healthy standby' -r -f -a "primary\t''
replica\t''"
complete -c hasync -n "__fish_hasync_using_subcommand status" -l max-lag -d 'With --check replica: also 1 when the last sync or replay received is older than this (60s, 5m, 1h, 500ms)' -r
complete -c hasync -n "__fish_hasync_using_subcommand status" -s c -l config -d 'Config file [default: /etc/hasync/hasync.toml]' -r -F
complete -c hasync -n "__fish_hasync_using_subcommand status" -l peer-address -d 'Use this address for the peer and the master check (what the IP argument of Wazo\'s scripts does; see `compat`)' -r
complete -c hasync -n "__fish_hasync_using_subcommand status" -l json -d 'Print one JSON object instead of text'
complete -c hasync -n "__fish_hasync_using_subcommand status" -s v -l verbose -d 'More output (repeat for debug logs)'
complete -c hasync -n "__fish_hasync_using_subcommand status" -s q -l quiet -d 'Only errors'
complete -c hasync -n "__fish_hasync_using_subcommand status" -s h -l help -d 'Print help'
complete -c hasync -n "__fish_hasync_using_subcommand cron" -l user -d 'The user the lines run as' -r
complete -c hasync -n "__fish_hasync_using_subcommand cron" -l next-runs -d 'Test hook: read cron expressions from stdin, one a line, and print each one\'s next N run times (wall clock, no zone) after --from, instead of cron lines' -r
complete -c hasync -n "__fish_hasync_using_subcommand cron" -l from -d 'With --next-runs: the start, YYYY-MM-DDTHH:MM:SS (the runs are strictly after it)' -r
complete -c hasync -n "__fish_hasync_using_subcommand cron" -s c -l config -d 'Config file [default: /etc/hasync/hasync.toml]' -r -F
complete -c hasync -n "__fish_hasync_using_subcommand cron" -l peer-address -d 'Use this address for the peer and the master check (what the IP argument of Wazo\'s scripts does; see `compat`)' -r
complete -c hasync -n "__fish_hasync_using_subcommand cron" -s v -l verbose -d 'More output (repeat for debug logs)'
complete -c hasync -n "__fish_hasync_using_subcommand cron" -s q -l quiet -d 'Only errors'
complete -c hasync -n "__fish_hasync_using_subcommand cron" -s h -l help -d 'Print help'
complete -c hasync -n "__fish_hasync_using_subcommand serve" -l allow -d 'A directory this peer may serve (repeatable; implies --restrict)' -r -F
complete -c hasync -n "__fish_hasync_using_subcommand serve" -l handshake-timeout -d 'Seconds the peer has to complete its Hello before serve gives up (exit 3); default $HASYNC_HANDSHAKE_TIMEOUT or 30' -r
complete -c hasync -n "__fish_hasync_using_subcommand serve" -l idle-timeout -d 'Seconds the peer may stay silent (nothing sent, nothing read) once the session is set up before serve gives up (exit 3); default $HASYNC_IDLE_TIMEOUT or 600' -r
complete -c hasync -n "__fish_hasync_using_subcommand serve" -s c -l config -d 'Config file [default: /etc/hasync/hasync.toml]' -r -F
complete -c hasync -n "__fish_hasync_using_subcommand serve" -l peer-address -d 'Use this address for the peer and the master check (what the IP argument of Wazo\'s scripts does; see `compat`)' -r
complete -c hasync -n "__fish_hasync_using_subcommand serve" -l restrict -d 'Only serve the directories of this node\'s config ([[sync]] paths under `root`, the [db] staging dir) and --allow; DB replay only with this node\'s own [db] section'
complete -c hasync -n "__fish_hasync_using_subcommand serve" -l no-fsync -d 'Don\'t flush received files to disk before renaming them'
complete -c hasync -n "__fish_hasync_using_subcommand serve" -l no-config -d 'Read no config file, not even $HASYNC_CONFIG or the default one (what a local peer\'s child gets when the master\'s config has no [node] peer_config)'
complete -c hasync -n "__fish_hasync_using_subcommand serve" -s v -l verbose -d 'More output (repeat for debug logs)'
complete -c hasync -n "__fish_hasync_using_subcommand serve" -s q -l quiet -d 'Only errors'
complete -c hasync -n "__fish_hasync_using_subcommand serve" -s h -l help -d 'Print help'
complete -c hasync -n "__fish_hasync_using_subcommand generate; and not __fish_seen_subcommand_from man completions help" -s c -l config -d 'Config file [default: /etc/hasync/hasync.toml]' -r -F
complete -c hasync -n "__fish_hasync_using_subcommand generate; and not __fish_seen_subcommand_from man completions help" -l peer-address -d 'Use this address for the peer and the master check (what the IP argument of Wazo\'s scripts does; see `compat`)' -r
complete -c hasync -n "__fish_hasync_using_subcommand generate; and not __fish_seen_subcommand_from man completions help" -s v -l verbose -d 'More output (repeat for debug logs)'
complete -c hasync -n "__fish_hasync_using_subcommand generate; and not __fish_seen_subcommand_from man completions help" -s q -l quiet -d 'Only errors'
complete -c hasync -n "__fish_hasync_using_subcommand generate; and not __fish_seen_subcommand_from man completions help" -s h -l help -d 'Print help'
complete -c hasync -n "__fish_hasync_using_subcommand generate; and not __fish_seen_subcommand_from man completions help" -f -a "man" -d 'hasync.1 on stdout; with --out DIR, hasync.1 and hasync-<command>.1 in DIR'
complete -c hasync -n "__fish_hasync_using_subcommand generate; and not __fish_seen_subcommand_from man completions help" -f -a "completions" -d 'The completion script for SHELL on stdout, or into DIR with --out'
complete -c hasync -n "__fish_hasync_using_subcommand generate; and not __fish_seen_subcommand_from man completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c hasync -n "__fish_hasync_using_subcommand generate; and __fish_seen_subcommand_from man" -l out -r -F
complete -c hasync -n "__fish_hasync_using_subcommand generate; and __fish_seen_subcommand_from man" -s c -l config -d 'Config file [default: /etc/hasync/hasync.toml]' -r -F
complete -c hasync -n "__fish_hasync_using_subcommand generate; and __fish_seen_subcommand_from man" -l peer-address -d 'Use this address for the peer and the master check (what the IP argument of Wazo\'s scripts does; see `compat`)' -r
complete -c hasync -n "__fish_hasync_using_subcommand generate; and __fish_seen_subcommand_from man" -s v -l verbose -d 'More output (repeat for debug logs)'
complete -c hasync -n "__fish_hasync_using_subcommand generate; and __fish_seen_subcommand_from man" -s q -l quiet -d 'Only errors'
complete -c hasync -n "__fish_hasync_using_subcommand generate; and __fish_seen_subcommand_from man" -s h -l help -d 'Print help'
complete -c hasync -n "__fish_hasync_using_subcommand generate; and __fish_seen_subcommand_from completions" -l out -r -F
complete -c hasync -n "__fish_hasync_using_subcommand generate; and __fish_seen_subcommand_from completions" -s c -l config -d 'Config file [default: /etc/hasync/hasync.toml]' -r -F
complete -c hasync -n "__fish_hasync_using_subcommand generate; and __fish_seen_subcommand_from completions" -l peer-address -d 'Use this address for the peer and the master check (what the IP argument of Wazo\'s scripts does; see `compat`)' -r
complete -c hasync -n "__fish_hasync_using_subcommand generate; and __fish_seen_subcommand_from completions" -s v -l verbose -d 'More output (repeat for debug logs)'
complete -c hasync -n "__fish_hasync_using_subcommand generate; and __fish_seen_subcommand_from completions" -s q -l quiet -d 'Only errors'
complete -c hasync -n "__fish_hasync_using_subcommand generate; and __fish_seen_subcommand_from completions" -s h -l help -d 'Print help'
complete -c hasync -n "__fish_hasync_using_subcommand generate; and __fish_seen_subcommand_from help" -f -a "man" -d 'hasync.1 on stdout; with --out DIR, hasync.1 and hasync-<command>.1 in DIR'
complete -c hasync -n "__fish_hasync_using_subcommand generate; and __fish_seen_subcommand_from help" -f -a "completions" -d 'The completion script for SHELL on stdout, or into DIR with --out'
complete -c hasync -n "__fish_hasync_using_subcommand generate; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c hasync -n "__fish_hasync_using_subcommand help; and not __fish_seen_subcommand_from push pull sync db-replicate init services check-master promote demote daemon switchover status cron serve generate help" -f -a "push" -d 'Mirror a local directory to a destination, like `rsync -a SRC/ DEST/`'
complete -c hasync -n "__fish_hasync_using_subcommand help; and not __fish_seen_subcommand_from push pull sync db-replicate init services check-master promote demote daemon switchover status cron serve generate help" -f -a "pull" -d 'Mirror a (remote) source into a local directory'
complete -c hasync -n "__fish_hasync_using_subcommand help; and not __fish_seen_subcommand_from push pull sync db-replicate init services check-master promote demote daemon switchover status cron serve generate help" -f -a "sync" -d 'Run the config\'s [[sync]] jobs now (all, or the named ones)'
complete -c hasync -n "__fish_hasync_using_subcommand help; and not __fish_seen_subcommand_from push pull sync db-replicate init services check-master promote demote daemon switchover status cron serve generate help" -f -a "db-replicate" -d 'Run the config\'s [db] job now: dump on the master, ship, replay on the slave'
complete -c hasync -n "__fish_hasync_using_subcommand help; and not __fish_seen_subcommand_from push pull sync db-replicate init services check-master promote demote daemon switchover status cron serve generate help" -f -a "init" -d 'Create this node\'s SSH key, install it on the peer (restricted), pin its host key'
complete -c hasync -n "__fish_hasync_using_subcommand help; and not __fish_seen_subcommand_from push pull sync db-replicate init services check-master promote demote daemon switchover status cron serve generate help" -f -a "services" -d 'Start, stop or show the slave services ([services]); idempotent'
complete -c hasync -n "__fish_hasync_using_subcommand help; and not __fish_seen_subcommand_from push pull sync db-replicate init services check-master promote demote daemon switchover status cron serve generate help" -f -a "check-master" -d 'Probe the master; start the slave services when it is gone, stop them when back'
complete -c hasync -n "__fish_hasync_using_subcommand help; and not __fish_seen_subcommand_from push pull sync db-replicate init services check-master promote demote daemon switchover status cron serve generate help" -f -a "promote" -d 'Make this node the master: services up, sentinel is-primary, role file'
complete -c hasync -n "__fish_hasync_using_subcommand help; and not __fish_seen_subcommand_from push pull sync db-replicate init services check-master promote demote daemon switchover status cron serve generate help" -f -a "demote" -d 'Make this node the slave: services down, sentinel is-secondary, role file'
complete -c hasync -n "__fish_hasync_using_subcommand help; and not __fish_seen_subcommand_from push pull sync db-replicate init services check-master promote demote daemon switchover status cron serve generate help" -f -a "daemon" -d 'Run every job on its schedule (cron, watch), with retries, status and metrics'
complete -c hasync -n "__fish_hasync_using_subcommand help; and not __fish_seen_subcommand_from push pull sync db-replicate init services check-master promote demote daemon switchover status cron serve generate help" -f -a "switchover" -d 'Move the leadership of a [cluster] (etcd) to another member, planned'
complete -c hasync -n "__fish_hasync_using_subcommand help; and not __fish_seen_subcommand_from push pull sync db-replicate init services check-master promote demote daemon switchover status cron serve generate help" -f -a "status" -d 'Show the role, the peer, and each job\'s last run, lag and next run'
complete -c hasync -n "__fish_hasync_using_subcommand help; and not __fish_seen_subcommand_from push pull sync db-replicate init services check-master promote demote daemon switchover status cron serve generate help" -f -a "cron" -d 'Print /etc/cron.d lines equivalent to the config\'s schedules'
complete -c hasync -n "__fish_hasync_using_subcommand help; and not __fish_seen_subcommand_from push pull sync db-replicate init services check-master promote demote daemon switchover status cron serve generate help" -f -a "serve" -d 'The peer side of a connection, started over SSH or as a local child; not for people'
complete -c hasync -n "__fish_hasync_using_subcommand help; and not __fish_seen_subcommand_from push pull sync db-replicate init services check-master promote demote daemon switchover status cron serve generate help" -f -a "generate" -d 'Write the man page or shell completions (for packaging)'
complete -c hasync -n "__fish_hasync_using_subcommand help; and not __fish_seen_subcommand_from push pull sync db-replicate init services check-master promote demote daemon switchover status cron serve generate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c hasync -n "__fish_hasync_using_subcommand help; and __fish_seen_subcommand_from generate" -f -a "man" -d 'hasync.1 on stdout; with --out DIR, hasync.1 and hasync-<command>.1 in DIR'
complete -c hasync -n "__fish_hasync_using_subcommand help; and __fish_seen_subcommand_from generate" -f -a "completions" -d 'The completion script for SHELL on stdout, or into DIR with --out'
