using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using IlgpuSae.IO;
using IlgpuSae.Study.Dashboards;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace IlgpuSae.Cli.Serve;

/// <summary>
/// The rating server of a study folder (<see cref="RatingStudy"/>): ASP.NET Core's Kestrel bound to
/// 127.0.0.1 only. It serves the files of <c>public/</c> (nothing else of the folder: not the key, not the
/// work dashboards) and a small JSON API:
/// <list type="bullet">
/// <item><c>GET /api/study</c>: the feature ids in rating order;</item>
/// <item><c>GET /api/state?rater=NAME</c>: that rater's latest ratings and the next unrated feature;</item>
/// <item><c>POST /api/ratings</c> <c>{rater, feature, label, description?}</c>: appends the rating to
/// <c>ratings.jsonl</c> and flushes it to the disk before answering 200; 400 for malformed JSON, a missing
/// field or a label other than yes/maybe/no, 404 for an unknown feature, 413 for a body over 16 KiB, 507
/// when the disk is full and 500 for another write error (the answer then says it was not saved).</item>
/// </list>
/// The folder is locked (<see cref="FolderLock"/>) while the server runs: a second server on the same study
/// refuses to start, so one process appends to the log.
/// </summary>
public sealed class RatingServer : IAsyncDisposable
{
    /// <summary>Largest request body accepted.</summary>
    public const int MaxBody = 16 * 1024;

    private readonly WebApplication _app;
    private readonly FolderLock _lock;
    private readonly RatingLog _log;
    private readonly string[] _ids;
    private readonly HashSet<string> _known;
    private readonly string _public;

    private RatingServer(WebApplication app, FolderLock folderLock, RatingLog log, string[] ids, string root)
    {
        _app = app;
        _lock = folderLock;
        _log = log;
        _ids = ids;
        _known = new HashSet<string>(ids, StringComparer.Ordinal);
        _public = root;
    }

    /// <summary>The address it listens on, e.g. <c>http://127.0.0.1:5180/</c>.</summary>
    public Uri Address { get; private set; } = null!;

    /// <summary>The ratings log.</summary>
    public RatingLog Log => _log;

    /// <summary>A note about a stale lock that was taken over, or null.</summary>
    public string? StaleLockNote => _lock.StaleNote;

    /// <summary>Starts serving <paramref name="folder"/> on 127.0.0.1:<paramref name="port"/> (0 = any free
    /// port).</summary>
    /// <exception cref="InvalidDataException">The folder is not a study.</exception>
    /// <exception cref="IOException">Another server holds the study, or the port is taken.</exception>
    public static async Task<RatingServer> StartAsync(
        string folder,
        int port,
        CancellationToken cancel = default
    )
    {
        var ids = RatingStudy.ReadIds(folder).ToArray();
        var root = Path.GetFullPath(Path.Combine(folder, RatingStudy.PublicFolder));
        var folderLock = FolderLock.Acquire(folder, "serve");
        try
        {
            var log = RatingLog.Open(Path.Combine(folder, RatingStudy.RatingsFile));
            var builder = WebApplication.CreateSlimBuilder(
                new WebApplicationOptions { ContentRootPath = root, Args = [] }
            );
            builder.Logging.ClearProviders();
            builder.WebHost.ConfigureKestrel(k =>
            {
                k.Listen(IPAddress.Loopback, port);
                k.Limits.MaxRequestBodySize = MaxBody;
                k.AddServerHeader = false;
            });
            var app = builder.Build();
            var server = new RatingServer(app, folderLock, log, ids, root);
            server.Map(app);
            try
            {
                await app.StartAsync(cancel).ConfigureAwait(false);
            }
            catch (IOException e)
            {
                await app.DisposeAsync().ConfigureAwait(false);
                throw new IOException($"Cannot listen on 127.0.0.1:{port}: {e.Message}", e);
            }

            var address = app
                .Services.GetRequiredService<IServer>()
                .Features.Get<IServerAddressesFeature>()!
                .Addresses.First();
            server.Address = new Uri(address.EndsWith('/') ? address : address + "/");
            return server;
        }
        catch
        {
            folderLock.Dispose();
            throw;
        }
    }

    /// <summary>Stops the server and releases the study.</summary>
    public async ValueTask DisposeAsync()
    {
        try
        {
            await _app.StopAsync().ConfigureAwait(false);
            await _app.DisposeAsync().ConfigureAwait(false);
        }
        finally
        {
            _lock.Dispose();
        }
    }

    /// <summary>Waits until the server stops (Ctrl-C).</summary>
    public Task WaitAsync(CancellationToken cancel) =>
        Microsoft.Extensions.Hosting.HostingAbstractionsHostExtensions.WaitForShutdownAsync(_app, cancel);

    private static IResult Error(int status, string message) =>
        Results.Json(new { error = message }, statusCode: status);

    private void Map(WebApplication app)
    {
        app.Use(
            async (context, next) =>
            {
                context.Response.Headers.CacheControl = "no-store";
                context.Response.Headers.XContentTypeOptions = "nosniff";
                await next(context).ConfigureAwait(false);
            }
        );
        app.MapGet("/api/study", () => Results.Json(new { features = _ids, count = _ids.Length }));
        app.MapGet("/api/state", (string? rater) => Results.Json(State(rater ?? "")));
        app.MapGet(
            "/api/features/{id}",
            (string id) =>
                _known.Contains(id)
                    ? Results.File(Path.Combine(_public, "features", id + ".json"), "application/json")
                    : Error(404, $"Unknown feature '{id}'.")
        );
        app.MapPost("/api/ratings", (Func<HttpContext, Task<IResult>>)PostRating);
        app.MapGet("/", () => Results.Redirect("/rate.html"));
        app.MapGet("/{**path}", (string path) => StaticFile(path));
        app.MapFallback(() => Error(404, "Not found."));
    }

    private JsonObject State(string rater)
    {
        var mine = RatingLog.Latest(_log.All.Where(r => r.Rater == rater));
        var ratings = new JsonObject();
        foreach (var ((_, feature), r) in mine)
        {
            ratings[feature] = new JsonObject
            {
                ["label"] = r.Label,
                ["description"] = r.Description,
                ["time"] = r.Time,
                ["revision"] = r.Revision,
            };
        }

        var next = _ids.FirstOrDefault(id => !mine.ContainsKey((rater, id)));
        return new JsonObject
        {
            ["rater"] = rater,
            ["ratings"] = ratings,
            ["rated"] = mine.Count,
            ["next"] = next,
        };
    }

    private IResult StaticFile(string path)
    {
        // Kestrel removes dot segments from the URL; what is left is refused if it could still climb out
        // (an encoded slash or a backslash with "..", a rooted path) or does not stay inside public/.
        if (
            path.Contains("..", StringComparison.Ordinal)
            || path.Contains('\\', StringComparison.Ordinal)
            || path.Contains('%', StringComparison.Ordinal)
            || path.Contains(':', StringComparison.Ordinal)
            || Path.IsPathRooted(path)
        )
        {
            return Error(400, "Refused: the path leaves the study's public folder.");
        }

        var full = Path.GetFullPath(Path.Combine(_public, path));
        if (!full.StartsWith(_public + Path.DirectorySeparatorChar, StringComparison.Ordinal))
        {
            return Error(400, "Refused: the path leaves the study's public folder.");
        }

        if (!File.Exists(full))
        {
            return Error(404, $"Not found: /{path}.");
        }

        var type = Path.GetExtension(full) switch
        {
            ".html" => "text/html; charset=utf-8",
            ".js" => "text/javascript; charset=utf-8",
            ".css" => "text/css; charset=utf-8",
            ".json" => "application/json",
            ".png" => "image/png",
            ".svg" => "image/svg+xml",
            _ => "application/octet-stream",
        };
        return Results.File(full, type);
    }

    private async Task<IResult> PostRating(HttpContext context)
    {
        if (context.Request.ContentLength > MaxBody)
        {
            return Error(413, $"The request body is larger than {MaxBody} bytes.");
        }

        byte[] body;
        try
        {
            using var buffer = new MemoryStream();
            await context.Request.Body.CopyToAsync(buffer, context.RequestAborted).ConfigureAwait(false);
            body = buffer.ToArray();
        }
        catch (BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            return Error(413, $"The request body is larger than {MaxBody} bytes.");
        }

        JsonObject request;
        try
        {
            request =
                JsonNode.Parse(Encoding.UTF8.GetString(body)) as JsonObject
                ?? throw new JsonException("not a JSON object");
        }
        catch (Exception e) when (e is JsonException or DecoderFallbackException)
        {
            return Error(400, $"The body is not a JSON object: {e.Message}");
        }

        string? Text(string name) =>
            request[name] is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
        var rater = Text("rater")?.Trim();
        var feature = Text("feature");
        var label = Text("label");
        var description = request["description"] is null ? null : Text("description");
        if (string.IsNullOrEmpty(rater) || rater.Length > 64)
        {
            return Error(400, "'rater' must be a name of 1 to 64 characters.");
        }

        if (string.IsNullOrEmpty(feature))
        {
            return Error(400, "'feature' is missing.");
        }

        if (label is null || !RatingLog.Coding.ContainsKey(label))
        {
            return Error(400, "'label' must be one of yes, maybe, no.");
        }

        if (request["description"] is not null && description is null)
        {
            return Error(400, "'description' must be a string.");
        }

        if (description is { Length: > 2000 })
        {
            return Error(400, "'description' is longer than 2000 characters.");
        }

        if (!_known.Contains(feature))
        {
            return Error(404, $"Unknown feature '{feature}'.");
        }

        try
        {
            var saved = _log.Append(rater, feature, label, description);
            var next = _ids.FirstOrDefault(id =>
                !RatingLog.Latest(_log.All.Where(r => r.Rater == rater)).ContainsKey((rater, id))
            );
            return Results.Json(
                new
                {
                    saved = true,
                    sequence = saved.Sequence,
                    revision = saved.Revision,
                    next,
                }
            );
        }
        catch (IOException e) when (IsDiskFull(e))
        {
            return Error(507, $"Not saved: the disk is full ({e.Message}).");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return Error(500, $"Not saved: {e.Message}");
        }
    }

    private static bool IsDiskFull(IOException e) =>
        (e.HResult & 0xFFFF) is 28 or 112 || e.Message.Contains("space", StringComparison.OrdinalIgnoreCase);
}
