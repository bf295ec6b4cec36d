#!/usr/bin/env escript
%% -*- erlang -*-
%%! -hidden +S 1 +sbwt none +sbwtdcpu none +sbwtdio none +zdbbl 65536
%% The native side of benchmarks/bench_node.py: a hidden BEAM node that makes exactly the
%% calls our Python Node makes, the same way (gen_server:call to the peer's rex server with
%% {call, M, F, A, user}), and prints its raw measurements as one JSON line on stdout.
%%
%% Usage (bench_node.py runs it; the scheduler flags match LocalCluster's nodes):
%%   PZ_BENCH_COOKIE=Cookie escript native_client.escript Server Name Warmup NLat NUp NDown
%%       NConc Rounds Deadline
%%
%% The cookie comes from the environment, never the command line (which every local user can
%% read in /proc). With ERL_FLAGS="-proto_dist inet_tls -ssl_dist_optfile F" it connects
%% over TLS distribution.
%%
%% Deadline is in seconds: the script halts with status 3 if it runs longer, so a stuck
%% benchmark never outlives its parent for long.
-mode(compile).

-define(MIB, 1048576).

main([Server0, Name0 | Counts]) ->
    try
        [Warmup, NLat, NUp, NDown, NConc, Rounds, Deadline] = [list_to_integer(C) || C <- Counts],
        {ok, _} = timer:apply_after(Deadline * 1000, erlang, halt, [3]),
        Server = list_to_atom(Server0),
        Cookie = list_to_atom(os:getenv("PZ_BENCH_COOKIE")),
        {ok, _} = net_kernel:start([list_to_atom(Name0), shortnames]),
        erlang:set_cookie(node(), Cookie),
        erlang:set_cookie(Server, Cookie),
        run(Server, Warmup, NLat, NUp, NDown, NConc, Rounds)
    of
        Json ->
            io:format("~s~n", [Json]),
            halt(0)
    catch
        Class:Reason:Stack ->
            io:format(standard_error, "native client failed: ~p:~p~n~p~n", [Class, Reason, Stack]),
            halt(1)
    end;
main(Args) ->
    io:format(standard_error, "bad arguments: ~p~n", [Args]),
    halt(2).

call(Server, M, F, A) ->
    gen_server:call({rex, Server}, {call, M, F, A, user}, infinity).

now_ns() ->
    erlang:monotonic_time(nanosecond).

run(Server, Warmup, NLat, NUp, NDown, NConc, Rounds) ->
    Server = call(Server, erlang, node, []),
    Hidden = lists:member(node(), call(Server, erlang, nodes, [hidden])),
    [Server = call(Server, erlang, node, []) || _ <- lists:seq(1, Warmup)],
    Lat = latencies(Server, NLat, []),

    Blob = rand:bytes(?MIB),
    [?MIB = call(Server, erlang, byte_size, [Blob]) || _ <- lists:seq(1, 3)],
    T0 = now_ns(),
    [?MIB = call(Server, erlang, byte_size, [Blob]) || _ <- lists:seq(1, NUp)],
    UpNs = now_ns() - T0,

    Get = fun() -> call(Server, persistent_term, get, [pz_bench_blob]) end,
    [?MIB = byte_size(Get()) || _ <- lists:seq(1, 3)],
    T1 = now_ns(),
    [?MIB = byte_size(Get()) || _ <- lists:seq(1, NDown)],
    DownNs = now_ns() - T1,

    _ = concurrent(Server, NConc),
    Conc = [concurrent(Server, NConc) || _ <- lists:seq(1, Rounds)],

    Fields = [
        {"node", quote(atom_to_list(node()))},
        {"otp", quote(erlang:system_info(otp_release))},
        {"erts", quote(erlang:system_info(version))},
        {"schedulers", integer_to_list(erlang:system_info(schedulers_online))},
        {"hidden", atom_to_list(Hidden)},
        {"lat_ns", ints(lists:reverse(Lat))},
        {"up_n", integer_to_list(NUp)},
        {"up_ns", integer_to_list(UpNs)},
        {"down_n", integer_to_list(NDown)},
        {"down_ns", integer_to_list(DownNs)},
        {"conc_n", integer_to_list(NConc)},
        {"conc_ns", ints(Conc)}
    ],
    ["{", lists:join(", ", [[quote(K), ": ", V] || {K, V} <- Fields]), "}"].

latencies(_Server, 0, Acc) ->
    Acc;
latencies(Server, N, Acc) ->
    T0 = now_ns(),
    Server = call(Server, erlang, node, []),
    latencies(Server, N - 1, [now_ns() - T0 | Acc]).

%% N calls in flight at once, one process each; returns the nanoseconds until all replied.
concurrent(Server, N) ->
    Parent = self(),
    T0 = now_ns(),
    [
        spawn_link(fun() -> Parent ! {pz_reply, I, call(Server, erlang, '+', [I, 1])} end)
     || I <- lists:seq(1, N)
    ],
    collect(N),
    now_ns() - T0.

collect(0) ->
    ok;
collect(N) ->
    receive
        {pz_reply, I, R} when R =:= I + 1 -> collect(N - 1);
        {pz_reply, I, R} -> error({wrong_reply, I, R})
    end.

ints(List) ->
    ["[", lists:join(",", [integer_to_list(X) || X <- List]), "]"].

quote(Text) ->
    [$", Text, $"].
