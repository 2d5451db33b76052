"""The one parser of HAProxy's server lists (cdpipe_host.haproxy), on text captured
from a real HAProxy: ``show servers state app`` (format version 1) and ``show stat``
(the stats CSV, as the stats page's ``/;csv`` serves it too)."""

from __future__ import annotations

import pytest

from cdpipe_host.haproxy import (
    APP_BACKEND,
    AdminState,
    HAProxyError,
    HAProxyRuntime,
    OpState,
    ServerState,
    ServerStats,
    parse_servers_state,
    parse_stats_csv,
)

# Captured once, through HAProxyRuntime.command, from "HAProxy version 2.6.12-1+deb12u4"
# (`haproxy -v`, Debian 12) started on 127.0.0.1 with a stats socket at level admin, the
# proxy role's backend settings (httpchk GET /healthz, cookie insert), health checks every
# 100 ms and two small HTTP servers answering 200 (/), 500 (/fail), 404 (/missing):
#   backend other: other-1 (up)
#   backend app:
#     prod-1    weight 171, up, one slow request in flight at capture time
#     prod-2    weight 171, up, then `set server app/prod-2 state drain`
#     canary-1  weight 85, `disabled` in the file (what the controller writes for a
#               canary held out by canary:alert)
#     canary-2  weight 85, nothing listening on its port: its health check fails
# then 11 requests through the frontend before the drain (7 x /, 3 x /fail,
# 1 x /missing, round robin over prod-1 and prod-2), then one /slow request to prod-1.

SHOW_SERVERS_STATE_APP = """\
1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
5 app 1 prod-1 127.0.0.1 2 0 171 171 1 15 3 1 6 0 0 0 - 33339 - 0 0 - - 0
5 app 2 prod-2 127.0.0.1 2 8 171 171 0 15 3 1 6 0 0 0 - 37119 - 0 0 - - 0
5 app 3 canary-1 127.0.0.1 0 5 85 85 1 1 0 0 14 0 0 0 - 37119 - 0 0 - - 0
5 app 4 canary-2 127.0.0.1 0 0 85 85 1 8 2 0 6 0 0 0 - 51019 - 0 0 - - 0

"""  # noqa: E501  (HAProxy's lines, as captured)

SHOW_STAT = """\
# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_connections,h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out,
www,FRONTEND,,,1,1,256,12,1152,1329,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,12,0,12,,,,0,7,0,1,3,0,,12,12,12,,,0,0,0,0,,,,,,,,,,,,,,,,,,,,,http,,12,12,12,0,0,0,0,,,0,0,,,,,,,0,,,,,,,,,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1,1,12,12,1451,1725,0,0,
stats,FRONTEND,,,0,0,256,0,0,0,0,0,0,,,,,OPEN,,,,,,,,,1,3,0,,,,0,0,0,0,,,,0,0,0,0,0,0,,0,0,0,,,0,0,0,0,,,,,,,,,,,,,,,,,,,,,http,,0,0,0,0,0,0,0,,,0,0,,,,,,,0,,,,,,,,,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
stats,BACKEND,0,0,0,0,26,0,0,0,0,0,,0,0,0,0,UP,0,0,0,,0,1,,,1,3,0,,0,,1,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,0,0,0,0,-1,,,0,0,0,0,,,,,,,,,,,,,,http,roundrobin,,,,,,,0,0,0,0,0,,,0,0,0,0,0,,,,,0,0,0,0,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
other,other-1,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP,1,1,0,0,0,1,0,,1,4,1,,0,,2,0,,0,L4OK,,0,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,Layer4 check passed,,2,3,4,,,,127.0.0.1:33339,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
other,BACKEND,0,0,0,0,1,0,0,0,0,0,,0,0,0,0,UP,1,1,0,,0,1,0,,1,4,0,,0,,1,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,0,0,0,0,-1,,,0,0,0,0,,,,,,,,,,,,,,http,roundrobin,,,,,,,0,0,0,0,0,,,0,0,0,0,0,,,,,1,0,0,0,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
app,prod-1,0,0,1,1,,7,629,716,,0,,0,0,0,0,UP,171,1,0,0,0,1,0,,1,5,1,,7,,2,7,,7,L7OK,200,1,0,4,0,1,1,0,,,,6,0,0,,,,,0,,,0,0,1,1,,,,Layer7 check passed,,1,1,1,,,,127.0.0.1:33339,prod-1,http,,,,,,,,0,7,0,,,0,,0,0,1,1,0,0,0,1,2,171,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
app,prod-2,0,0,0,1,,5,523,613,,0,,0,0,0,0,DRAIN,171,1,0,0,0,0,0,,1,5,2,,5,,2,5,,5,L7OK,200,1,0,3,0,0,2,0,,,,5,0,0,,,,,0,,,0,0,0,0,,,,Layer7 check passed,,1,1,1,,,,127.0.0.1:37119,prod-2,http,,,,,,,,0,5,0,,,0,,0,0,0,0,0,0,0,0,1,171,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
app,canary-1,0,0,0,0,,0,0,0,,0,,0,0,0,0,MAINT,85,1,0,0,0,1,1,,1,5,3,,0,,2,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,,,,,,,,,127.0.0.1:37119,canary-1,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,0,85,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
app,canary-2,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,85,1,0,1,1,1,1,,1,5,4,,0,,2,0,,0,L4CON,,0,0,0,0,0,0,0,,,,0,0,0,,,,,-1,Connection refused,,0,0,0,0,,,,Layer4 connection problem,,1,1,0,,,,127.0.0.1:51019,canary-2,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,85,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
app,BACKEND,0,0,1,1,26,12,1152,1329,0,0,,0,0,0,0,UP,171,1,0,,0,1,0,,1,5,0,,12,,1,12,,12,,,,0,7,0,1,3,0,,,,11,0,0,0,0,0,0,0,,,0,0,1,1,,,,,,,,,,,,,cdpipe_srv,http,roundrobin,,,,,,,0,12,0,0,0,,,0,0,1,1,0,,,,,171,0,0,0,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1,1,32,32,2861,1573,0,0,

"""  # noqa: E501  (HAProxy's lines, as captured)

# Replies of the same HAProxy to a backend and a server it does not have.
NO_SUCH_BACKEND = "Can't find backend.\n\n"
NO_SUCH_SERVER = "No such server.\n\n"


def test_servers_state_columns_are_where_the_parser_reads_them() -> None:
    lines = SHOW_SERVERS_STATE_APP.splitlines()
    assert lines[0] == "1"  # format version 1
    columns = lines[1].removeprefix("# ").split()
    assert [columns.index(c) for c in ("srv_name", "srv_addr", "srv_op_state",
                                       "srv_admin_state", "srv_uweight", "srv_port")] == [
        3, 4, 5, 6, 7, 18]


def test_parse_servers_state_names_every_server_state() -> None:
    servers = parse_servers_state(SHOW_SERVERS_STATE_APP)
    assert list(servers) == ["prod-1", "prod-2", "canary-1", "canary-2"]
    assert servers["prod-1"] == ServerState("prod-1", "127.0.0.1", 33339, OpState.RUNNING,
                                            AdminState(0), 171)
    assert servers["prod-2"] == ServerState("prod-2", "127.0.0.1", 37119, OpState.RUNNING,
                                            AdminState.FORCED_DRAIN, 171)
    assert servers["canary-1"] == ServerState(
        "canary-1", "127.0.0.1", 37119, OpState.STOPPED,
        AdminState.FORCED_MAINT | AdminState.CONFIG_MAINT, 85)
    assert servers["canary-2"] == ServerState("canary-2", "127.0.0.1", 51019,
                                              OpState.STOPPED, AdminState(0), 85)


def test_maintenance_and_rotation() -> None:
    servers = parse_servers_state(SHOW_SERVERS_STATE_APP)
    flags = {name: (s.in_maintenance, s.in_rotation) for name, s in servers.items()}
    assert flags == {
        "prod-1": (False, True),     # up: takes new requests
        # Drain is not maintenance (HAProxy still sends it the users its cookie binds,
        # which is why the controller uses maintenance for the kill switch), but a
        # draining server takes no new user: it is not in rotation.
        "prod-2": (False, False),
        "canary-1": (True, False),   # `disabled` in the file: forced maintenance
        "canary-2": (False, False),  # failing its health check: stopped
    }


@pytest.mark.parametrize("reply", [NO_SUCH_BACKEND, "", "1\n# be_id be_name srv_id\n\n"])
def test_parse_servers_state_of_a_reply_without_servers_is_empty(reply: str) -> None:
    assert parse_servers_state(reply) == {}


def test_parse_stats_csv_reads_the_servers_of_the_app_backend() -> None:
    assert parse_stats_csv(SHOW_STAT) == {
        "prod-1": ServerStats("prod-1", "UP", 171, sessions=1, responses=6, errors_5xx=1,
                              selected=7, failed=1),
        "prod-2": ServerStats("prod-2", "DRAIN", 171, sessions=0, responses=5, errors_5xx=2,
                              selected=5, failed=2),
        "canary-1": ServerStats("canary-1", "MAINT", 85, sessions=0, responses=0,
                                errors_5xx=0),
        "canary-2": ServerStats("canary-2", "DOWN", 85, sessions=0, responses=0,
                                errors_5xx=0),
    }
    servers = parse_stats_csv(SHOW_STAT, APP_BACKEND).values()
    # The 11 requests sent, 3 of them 5xx (the app BACKEND row says the same: 7 2xx,
    # 1 4xx, 3 5xx); the /slow one still in flight is a session, not a response yet.
    assert sum(s.responses for s in servers) == 11
    assert sum(s.errors_5xx for s in servers) == 3


def test_parse_stats_csv_skips_summary_rows_and_other_backends() -> None:
    assert parse_stats_csv(SHOW_STAT, "other") == {
        "other-1": ServerStats("other-1", "UP", 1, sessions=0, responses=0, errors_5xx=0)}
    assert parse_stats_csv(SHOW_STAT, "stats") == {}  # only FRONTEND and BACKEND rows
    assert parse_stats_csv(SHOW_STAT, "www") == {}    # a frontend
    assert parse_stats_csv(SHOW_STAT, "nosuch") == {}
    assert "BACKEND" not in parse_stats_csv(SHOW_STAT) and "FRONTEND" not in parse_stats_csv(
        SHOW_STAT)


def with_counts(text: str, server: str, **counts: int) -> str:
    """The captured CSV with some columns of one server's row set to other numbers."""
    header, *rows = text.splitlines()
    names = header.removeprefix("# ").split(",")
    out = [header]
    for row in rows:
        fields = row.split(",")
        if len(fields) > 1 and fields[1] == server:
            for column, value in counts.items():
                fields[names.index(column)] = str(value)
        out.append(",".join(fields))
    return "\n".join(out) + "\n"


def test_responses_sum_every_class_from_1xx_to_other() -> None:
    text = with_counts(SHOW_STAT, "prod-1", hrsp_1xx=1, hrsp_3xx=20, hrsp_other=300)
    prod1 = parse_stats_csv(text)["prod-1"]
    assert prod1.responses == 6 + 1 + 20 + 300
    assert prod1.errors_5xx == 1
    assert parse_stats_csv(with_counts(SHOW_STAT, "prod-2", hrsp_5xx=9))["prod-2"] == (
        ServerStats("prod-2", "DRAIN", 171, sessions=0, responses=12, errors_5xx=9,
                    selected=5, failed=9))
    # HAProxy's own 502/503 (response and connection errors) count as failed there.
    failing = parse_stats_csv(with_counts(SHOW_STAT, "prod-2", eresp=4, econ=3))["prod-2"]
    assert (failing.errors_5xx, failing.failed) == (2, 2 + 4 + 3)


def test_parse_stats_csv_of_nothing_is_empty() -> None:
    assert parse_stats_csv("") == {}
    assert parse_stats_csv(NO_SUCH_BACKEND) == {}


def test_runtime_commands_answering_a_line_are_errors() -> None:
    with pytest.raises(HAProxyError, match=r"^No such server\.$"):
        HAProxyRuntime._ok(NO_SUCH_SERVER)
    HAProxyRuntime._ok("\n")  # nothing: success
    with pytest.raises(HAProxyError, match=r"HAProxy runtime API at /nonexistent/admin\.sock"):
        HAProxyRuntime("/nonexistent/admin.sock", timeout=0.5).command("show info")
