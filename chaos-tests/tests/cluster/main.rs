//! The whole-cluster fault tests, in one test binary: one module per scenario, so the area
//! links once. Each scenario starts real member and agent processes through
//! [`support::start`], which hands out the machine one scenario at a time (see
//! [`support::Exclusive`]): the scenarios assert on elections and timings, and two clusters
//! sharing two cores would measure each other.

mod support;

mod a_flamepy_service_under_a_real_agent_serves_a_flamepy_client;
mod a_member_whose_disk_fills_exits_non_zero_and_catches_up_after_restart;
mod a_runner_job_survives_a_leader_sigkill_and_nested_clients_a_lost_member;
mod a_session_survives_a_leader_sigkill_without_losing_or_repeating_tasks;
mod a_task_that_keeps_losing_its_agent_fails_at_the_retry_limit;
mod eight_sessions_share_two_slots_without_waiting_for_delay_release;
mod flamepy_objects_and_service_contexts_work_through_a_follower;
mod flamepy_reads_and_writes_a_tls_cache;
mod flamepy_runner_projects_work_through_a_follower_of_a_multi_process_cluster;
mod flamepy_session_and_application_calls_survive_a_leader_sigkill;
mod flamepy_tasks_through_a_follower_survive_two_leader_sigkills;
mod node_caches_share_replicate_and_keep_objects;
mod sdk_admin_manages_applications_nodes_executors_and_the_raft_group;
mod sdk_submissions_through_two_leader_sigkills_create_each_task_exactly_once;
mod sdk_watch_and_run_deliver_the_terminal_state_across_member_kills;
mod tasks_of_a_killed_agent_finish_on_the_other_agent;
mod the_pi_example_estimates_pi_on_three_members_and_a_node_agent;
