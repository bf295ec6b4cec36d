#!/usr/bin/env escript
%% -*- erlang -*-
%%! -hidden +S 1 +sbwt none +sbwtdcpu none +sbwtdio none +zdbbl 65536
%% The native side of benchmarks/bench_mnesia.py: a hidden BEAM node that writes chunks into
%% a Mnesia table exactly the way MnesiaClient does (sync_transaction: it returns once every
%% active replica committed), through the server's rex:
%%
%%   per chunk: gen_server:call({rex, Server},
%%                  {call, mnesia, sync_transaction, [fun mnesia:write/1, [Rec]], user}, infinity)
%%   batch:     ... {call, mnesia, sync_transaction,
%%                  [fun lists:foreach/2, [fun mnesia:write/1, Recs]], user} ...
%%
%% Usage (bench_mnesia.py runs it; the scheduler flags match LocalCluster's nodes):
%%   PZ_BENCH_COOKIE=Cookie escript native_mnesia.escript Server Name Deadline
%% (the cookie from the environment, never on the command line)
%%
%% After connecting it prints one JSON line ({"ready": true, ...}), then reads commands from
%% stdin, one per line, and answers each with one JSON line on stdout:
%%   run Table Size Mode N Param   Mode: seq (Param unused), conc (Param writers),
%%                                 batch (Param chunks per transaction),
%%                                 dread (N dirty reads of the records a run wrote),
%%                                 tread (the same records, Param per sync_transaction)
%%   quit
%% Chunk data is generated once per size and reused for every call. Deadline is in seconds:
%% the script halts with status 3 if it runs longer; it also halts when stdin closes.
-mode(compile).

main([Server0, Name0, Deadline0]) ->
    try
        {ok, _} = timer:apply_after(list_to_integer(Deadline0) * 1000, erlang, halt, [3]),
        Server = list_to_atom(Server0),
        Cookie = list_to_atom(os:getenv("PZ_BENCH_COOKIE")),
        {ok, _} = net_kernel:start([list_to_atom(Name0), shortnames]),
        erlang:set_cookie(node(), Cookie),
        erlang:set_cookie(Server, Cookie),
        Server = call(Server, erlang, node, []),
        Hidden = lists:member(node(), call(Server, erlang, nodes, [hidden])),
        reply([
            {"ready", "true"},
            {"node", quote(atom_to_list(node()))},
            {"otp", quote(erlang:system_info(otp_release))},
            {"erts", quote(erlang:system_info(version))},
            {"schedulers", integer_to_list(erlang:system_info(schedulers_online))},
            {"hidden", atom_to_list(Hidden)}
        ]),
        loop(Server, #{})
    catch
        Class:Reason:Stack ->
            io:format(standard_error, "native client failed: ~p:~p~n~p~n", [Class, Reason, Stack]),
            halt(1)
    end;
main(Args) ->
    io:format(standard_error, "bad arguments: ~p~n", [Args]),
    halt(2).

loop(Server, Blobs) ->
    case io:get_line(standard_io, "") of
        eof ->
            halt(0);
        {error, _} ->
            halt(0);
        Line ->
            case string:lexemes(string:trim(Line), " ") of
                ["quit"] ->
                    halt(0);
                ["run", Tab0, Size0, Mode, N0, Param0] ->
                    [Size, N, Param] = [list_to_integer(X) || X <- [Size0, N0, Param0]],
                    Data =
                        case Blobs of
                            #{Size := D} -> D;
                            _ -> rand:bytes(Size)
                        end,
                    Tab = list_to_atom(Tab0),
                    T0 = erlang:monotonic_time(nanosecond),
                    ok = run(Server, Tab, Data, Mode, N, Param),
                    Ns = erlang:monotonic_time(nanosecond) - T0,
                    reply([
                        {"size", integer_to_list(Size)},
                        {"mode", quote(Mode)},
                        {"n", integer_to_list(N)},
                        {"ns", integer_to_list(Ns)}
                    ]),
                    loop(Server, Blobs#{Size => Data});
                Other ->
                    error({bad_command, Other})
            end
    end.

call(Server, M, F, A) ->
    gen_server:call({rex, Server}, {call, M, F, A, user}, infinity).

key(I) ->
    {<<"bench">>, {I, 0}}.

write_one(Server, Tab, Data, I) ->
    {atomic, ok} = call(
        Server, mnesia, sync_transaction, [fun mnesia:write/1, [{Tab, key(I), Data}]]
    ),
    ok.

run(Server, Tab, Data, "seq", N, _) ->
    lists:foreach(fun(I) -> write_one(Server, Tab, Data, I) end, lists:seq(0, N - 1));
run(Server, Tab, Data, "conc", N, Writers) ->
    %% writer W writes chunks W, W + Writers, W + 2 * Writers, ... one after the other
    Parent = self(),
    Pids = [
        spawn_link(fun() ->
            lists:foreach(
                fun(I) -> write_one(Server, Tab, Data, I) end, lists:seq(W, N - 1, Writers)
            ),
            Parent ! {done, self()}
        end)
     || W <- lists:seq(0, Writers - 1)
    ],
    lists:foreach(fun(Pid) -> receive {done, Pid} -> ok end end, Pids);
run(Server, Tab, Data, "dread", N, _) ->
    %% mnesia:dirty_read through rex, as MnesiaClient.read does
    Size = byte_size(Data),
    lists:foreach(
        fun(I) ->
            [{Tab, _, Got}] = call(Server, mnesia, dirty_read, [Tab, key(I)]),
            Size = byte_size(Got)
        end,
        lists:seq(0, N - 1)
    );
run(Server, Tab, Data, "tread", N, Batch) ->
    %% lists:map(fun mnesia:read/1, Oids) in one sync_transaction, as MnesiaClient.read_many
    %% (consistent=True) does for a get_slice
    Size = byte_size(Data),
    lists:foreach(
        fun(First) ->
            Oids = [{Tab, key(I)} || I <- lists:seq(First, min(N, First + Batch) - 1)],
            {atomic, Found} = call(
                Server, mnesia, sync_transaction, [fun lists:map/2, [fun mnesia:read/1, Oids]]
            ),
            [Size = byte_size(D) || [{_, _, D}] <- Found]
        end,
        lists:seq(0, N - 1, Batch)
    );
run(Server, Tab, Data, "batch", N, Batch) ->
    lists:foreach(
        fun(First) ->
            Recs = [{Tab, key(I), Data} || I <- lists:seq(First, min(N, First + Batch) - 1)],
            {atomic, ok} = call(
                Server, mnesia, sync_transaction, [fun lists:foreach/2, [fun mnesia:write/1, Recs]]
            )
        end,
        lists:seq(0, N - 1, Batch)
    ).

reply(Fields) ->
    io:format("~s~n", [["{", lists:join(", ", [[quote(K), ": ", V] || {K, V} <- Fields]), "}"]]).

quote(Text) ->
    [$", Text, $"].
